package distributor

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/prometheus/prompb"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// Discard reasons: the `reason` label of vigil_discarded_samples_total. The
// ingester's reasons (pkg/ingester/client) are reused as they are.
const (
	ReasonMissingMetricName      = "missing_metric_name"
	ReasonInvalidMetricName      = "metric_name_invalid"
	ReasonInvalidLabelName       = "label_name_invalid"
	ReasonInvalidLabelValue      = "label_value_invalid"
	ReasonDuplicateLabelNames    = "duplicate_label_names"
	ReasonLabelNameTooLong       = "label_name_too_long"
	ReasonLabelValueTooLong      = "label_value_too_long"
	ReasonMaxLabelNamesPerSeries = "max_label_names_per_series"
	ReasonTooFarInFuture         = "too_far_in_future"
	ReasonTooFarInPast           = "too_far_in_past"
	ReasonRateLimited            = "rate_limited"
	ReasonExemplarLabelsTooLong  = "exemplar_labels_too_long"
	// ReasonIngesterRefused counts requests a quorum of ingesters refused
	// as a whole with a client error (e.g. a message over their size limit).
	ReasonIngesterRefused         = "ingester_refused"
	ReasonPerUserSeriesLimit      = ingclient.ReasonPerUserSeriesLimit
	ReasonPerMetricSeriesLimit    = ingclient.ReasonPerMetricSeriesLimit
	ReasonOutOfOrder              = ingclient.ReasonOutOfOrder
	ReasonTooOld                  = ingclient.ReasonTooOld
	ReasonDuplicateSample         = ingclient.ReasonDuplicateSample
	ReasonInvalidHistogram        = ingclient.ReasonInvalidHistogram
	ReasonInvalidExemplar         = ingclient.ReasonInvalidExemplar
	ReasonOutOfOrderExemplar      = ingclient.ReasonOutOfOrderExemplar
	ReasonDuplicateExemplar       = ingclient.ReasonDuplicateExemplar
	ReasonInvalidSeriesAtIngester = ingclient.ReasonInvalidSeries
)

// isExemplarReason reports whether an ingester refusal concerns exemplars only, not
// the series' samples.
func isExemplarReason(reason string) bool {
	switch reason {
	case ReasonInvalidExemplar, ReasonOutOfOrderExemplar, ReasonDuplicateExemplar:
		return true
	}
	return false
}

// failsWrite reports whether a refusal of this reason makes the write partial (400).
// Out-of-order and duplicate exemplars do not: a sender resending a request that was
// stored (after a timeout or a 5xx) always produces them, and Prometheus' own receiver
// does not fail a request for them either. A 400 would make the sender drop the batch as
// non-retryable and count it failed although its samples are stored. They are still
// counted in vigil_discarded_exemplars_total and left out of the written counts.
// Invalid exemplars keep failing the write: the sender has to fix them.
func failsWrite(reason string) bool {
	switch reason {
	case ReasonOutOfOrderExemplar, ReasonDuplicateExemplar:
		return false
	}
	return true
}

// howToRaise tells the user which knob governs each reason. It is a function
// rather than a map so the package has no globals.
func howToRaise(reason string) string {
	flagHint := func(flag, key string) string {
		return fmt.Sprintf("To adjust the limit, set -%s or the per-tenant override %q in the runtime config file.", flag, key)
	}
	switch reason {
	case ReasonLabelNameTooLong:
		return flagHint(validation.FlagMaxLabelNameLength, "max_label_name_length")
	case ReasonLabelValueTooLong:
		return flagHint(validation.FlagMaxLabelValueLength, "max_label_value_length")
	case ReasonMaxLabelNamesPerSeries:
		return flagHint(validation.FlagMaxLabelNamesPerSeries, "max_label_names_per_series")
	case ReasonTooFarInFuture:
		return flagHint(validation.FlagCreationGracePeriod, "creation_grace_period")
	case ReasonTooFarInPast:
		return flagHint(validation.FlagPastGracePeriod, "past_grace_period")
	case ReasonRateLimited:
		return fmt.Sprintf("To adjust the limit, set -%s and -%s or the per-tenant overrides \"ingestion_rate\" and \"ingestion_burst_size\" in the runtime config file.", validation.FlagIngestionRate, validation.FlagIngestionBurstSize)
	case ReasonPerUserSeriesLimit:
		return flagHint(validation.FlagMaxGlobalSeriesPerUser, "max_global_series_per_user")
	case ReasonPerMetricSeriesLimit:
		return flagHint(validation.FlagMaxGlobalSeriesPerMetric, "max_global_series_per_metric")
	case ReasonOutOfOrder, ReasonTooOld, ReasonOutOfOrderExemplar:
		// The TSDB's exemplar storage accepts out-of-order exemplars within the same window.
		return flagHint(validation.FlagOutOfOrderTimeWindow, "out_of_order_time_window")
	case ReasonExemplarLabelsTooLong:
		return "The limit is fixed by the Prometheus exemplar format; shorten the exemplar's labels in the sender."
	case ReasonMissingMetricName, ReasonInvalidMetricName, ReasonInvalidLabelName, ReasonInvalidLabelValue, ReasonDuplicateLabelNames:
		return "Fix the series in the sender (e.g. with relabeling); this is not a configurable limit."
	}
	return ""
}

// Rejection is data of one series refused for one reason.
type Rejection struct {
	Reason string
	// Series identifies the series, e.g. `up{job="node"}` (long values truncated).
	Series string
	// Message explains the limit, the value seen and how to raise the limit.
	Message string
	// Samples, Histograms and Exemplars count what was refused.
	Samples, Histograms, Exemplars int
}

// PushResult reports what a push wrote (after validation, limits and the
// ingesters' own checks) and what it refused. Rejections may be non-empty on
// success: refusals that do not fail a write (failsWrite) are listed too.
type PushResult struct {
	Samples, Histograms, Exemplars, Metadata int
	Rejections                               []Rejection
}

// PushError is returned by PushMetrics when (part of) a request was not
// written. Code is the HTTP status a write endpoint answers with: 400 when
// some data was refused (the rest is written; exemplars refused as out of
// order or duplicate alone do not make a 400, see failsWrite), 413 for a
// request too large, 429 when rate limited (nothing written), 5xx when the
// ingesters could not be reached (retry).
type PushError struct {
	Code       int
	RetryAfter time.Duration
	Msg        string
	Err        error
}

func (e *PushError) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *PushError) Unwrap() error { return e.Err }

// StatusCode returns the HTTP status for err: 200 for nil, the PushError's
// code, or 500.
func StatusCode(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var pe *PushError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return http.StatusInternalServerError
}

// maxMessagesInBody bounds the error body: one broken exporter can send
// thousands of bad series, and the first few explain the problem.
const maxMessagesInBody = 10

// partialError builds the 400 answered when some data was refused.
func partialError(res PushResult) *PushError {
	var b strings.Builder
	var refSamples, refHist, refEx int
	for _, r := range res.Rejections {
		refSamples += r.Samples
		refHist += r.Histograms
		refEx += r.Exemplars
	}
	fmt.Fprintf(&b, "partial write: %d samples, %d histograms and %d exemplars were rejected (%d samples, %d histograms, %d exemplars written):",
		refSamples, refHist, refEx, res.Samples, res.Histograms, res.Exemplars)
	for i, r := range res.Rejections {
		if i == maxMessagesInBody {
			fmt.Fprintf(&b, "\n... and %d more rejected series", len(res.Rejections)-maxMessagesInBody)
			break
		}
		b.WriteString("\n")
		b.WriteString(r.Message)
	}
	return &PushError{Code: http.StatusBadRequest, Msg: b.String()}
}

// maxValueInMessage truncates label values quoted in messages.
const maxValueInMessage = 120

func truncate(s string) string {
	if len(s) <= maxValueInMessage {
		return s
	}
	return s[:maxValueInMessage] + "...(truncated)"
}

// seriesString renders labels like Prometheus does, truncating long values so
// a message stays readable.
func seriesString(ls []prompb.Label) string {
	var b strings.Builder
	name := ""
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
		}
	}
	b.WriteString(truncate(name))
	b.WriteByte('{')
	first := true
	for _, l := range ls {
		if l.Name == "__name__" {
			continue
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		fmt.Fprintf(&b, "%s=%q", truncate(l.Name), truncate(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// rejectionMessage formats one rejection: what, for which series, the value
// seen, the limit and how to raise it.
func rejectionMessage(reason, detail, series string) string {
	msg := fmt.Sprintf("%s, series %s (reason: %s).", detail, series, reason)
	if hint := howToRaise(reason); hint != "" {
		msg += " " + hint
	}
	return msg
}
