package distributor

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// Every limit a user can hit names the flag and the per-tenant override
// that raises it.
func TestEveryLimitSaysHowToRaiseIt(t *testing.T) {
	for reason, want := range map[string][]string{
		ReasonLabelNameTooLong:       {validation.FlagMaxLabelNameLength, "max_label_name_length"},
		ReasonLabelValueTooLong:      {validation.FlagMaxLabelValueLength, "max_label_value_length"},
		ReasonMaxLabelNamesPerSeries: {validation.FlagMaxLabelNamesPerSeries, "max_label_names_per_series"},
		ReasonTooFarInFuture:         {validation.FlagCreationGracePeriod, "creation_grace_period"},
		ReasonTooFarInPast:           {validation.FlagPastGracePeriod, "past_grace_period"},
		ReasonRateLimited:            {validation.FlagIngestionRate, validation.FlagIngestionBurstSize, "ingestion_rate", "ingestion_burst_size"},
		ReasonPerUserSeriesLimit:     {validation.FlagMaxGlobalSeriesPerUser, "max_global_series_per_user"},
		ReasonPerMetricSeriesLimit:   {validation.FlagMaxGlobalSeriesPerMetric, "max_global_series_per_metric"},
		ReasonOutOfOrder:             {validation.FlagOutOfOrderTimeWindow, "out_of_order_time_window"},
		ReasonTooOld:                 {validation.FlagOutOfOrderTimeWindow, "out_of_order_time_window"},
		ReasonOutOfOrderExemplar:     {validation.FlagOutOfOrderTimeWindow, "out_of_order_time_window"},
		ReasonExemplarLabelsTooLong:  {"fixed", "shorten"},
	} {
		hint := howToRaise(reason)
		for _, w := range want {
			if !strings.Contains(hint, w) {
				t.Errorf("%s: hint %q does not mention %q", reason, hint, w)
			}
		}
	}
}

func TestPartialErrorBodyIsBounded(t *testing.T) {
	var rej rejections
	for i := 0; i < 50; i++ {
		rej.add(ReasonLabelValueTooLong, strings.Repeat("s", i+1), "too long", 1, 0, 0)
	}
	rej.add(ReasonLabelValueTooLong, "s", "too long", 2, 0, 0) // same series: aggregated
	pe := partialError(PushResult{Samples: 7, Rejections: rej.list})
	if pe.Code != http.StatusBadRequest {
		t.Fatalf("code %d", pe.Code)
	}
	msg := pe.Error()
	mustContain(t, msg, "52 samples", "7 samples", "and 40 more rejected series")
	if n := strings.Count(msg, "too long"); n != maxMessagesInBody {
		t.Errorf("%d messages in body, want %d", n, maxMessagesInBody)
	}
}

func TestRateLimiterFollowsLimitChanges(t *testing.T) {
	rl := newRateLimiters()
	now := time.Unix(1000, 0)
	if ok, _ := rl.reserve("t", 10, 10, 10, now); !ok {
		t.Fatal("first request within burst refused")
	}
	ok, wait := rl.reserve("t", 10, 10, 5, now)
	if ok || wait <= 0 {
		t.Fatalf("empty bucket: ok=%v wait=%v", ok, wait)
	}
	// Half a second later 5 tokens are back.
	if ok, _ := rl.reserve("t", 10, 10, 5, now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refilled tokens refused")
	}
	// A raised limit refills at the new rate from the moment it is seen:
	// 10ms at 10/s is not enough, 15ms more at 1000/s fills the bucket.
	if ok, _ := rl.reserve("t", 1000, 10, 10, now.Add(510*time.Millisecond)); ok {
		t.Fatal("bucket refilled faster than the old limit allows")
	}
	if ok, _ := rl.reserve("t", 1000, 10, 10, now.Add(525*time.Millisecond)); !ok {
		t.Fatal("raised limit not applied")
	}
	// A limit of 0 disables limiting.
	if ok, _ := rl.reserve("t", 0, 0, 1_000_000, now); !ok {
		t.Fatal("disabled limit refused")
	}
}
