package client

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Rejection reasons the ingester reports per series. The distributor maps them onto
// vigil_discarded_samples_total{reason} and user-facing messages.
const (
	ReasonOutOfOrder           = "out_of_order"
	ReasonTooOld               = "too_old"
	ReasonDuplicateSample      = "duplicate_sample"
	ReasonPerUserSeriesLimit   = "per_user_series_limit"
	ReasonPerMetricSeriesLimit = "per_metric_series_limit"
	ReasonInvalidSeries        = "invalid_series"
	ReasonInvalidHistogram     = "invalid_histogram"
	ReasonInvalidExemplar      = "invalid_exemplar"
	// Exemplar rejections: Prometheus' own receiver drops these without failing the
	// request; Vigil reports them so nothing vanishes unexplained. The distributor counts
	// them but does not fail the write for them: a retried request always produces them.
	ReasonOutOfOrderExemplar = "out_of_order_exemplar"
	ReasonDuplicateExemplar  = "duplicate_exemplar"
)

// PushResponse is the reply to Ingester/Push. Everything not listed in Rejections was
// committed to the WAL before the response was sent.
//
// Wire format (proto3, hand-encoded because no protoc is available):
//
//	message PushResponse {
//	  int64 samples_written = 1;
//	  int64 histograms_written = 2;
//	  int64 exemplars_written = 3;
//	  repeated Rejection rejections = 4;
//	  int64 metadata_written = 5;
//	}
//	message Rejection {
//	  string reason = 1;
//	  string series = 2;   // labels in Prometheus text form, e.g. {__name__="up", job="x"}
//	  string message = 3;
//	  int64 count = 4;     // samples + histograms + exemplars rejected for this series/reason
//	}
type PushResponse struct {
	SamplesWritten    int64
	HistogramsWritten int64
	ExemplarsWritten  int64
	MetadataWritten   int64
	Rejections        []Rejection
}

// Rejection describes data of one series the ingester refused for one reason.
type Rejection struct {
	Reason  string
	Series  string
	Message string
	Count   int64
}

// RejectedCount is the total number of rejected samples, histograms and exemplars.
func (r *PushResponse) RejectedCount() int64 {
	var n int64
	for _, rej := range r.Rejections {
		n += rej.Count
	}
	return n
}

// Reset, String and ProtoMessage make PushResponse a legacy (v1) protobuf message, so
// a gRPC server that did not install Codec still encodes it through Marshal/Unmarshal
// (google.golang.org/protobuf's legacy wrapper uses those methods when present).
func (r *PushResponse) Reset() { *r = PushResponse{} }

// String implements the legacy proto.Message interface.
func (r *PushResponse) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "samples_written:%d histograms_written:%d exemplars_written:%d metadata_written:%d",
		r.SamplesWritten, r.HistogramsWritten, r.ExemplarsWritten, r.MetadataWritten)
	for _, rej := range r.Rejections {
		fmt.Fprintf(&b, " rejection:{reason:%q series:%q message:%q count:%d}", rej.Reason, rej.Series, rej.Message, rej.Count)
	}
	return b.String()
}

// ProtoMessage implements the legacy proto.Message interface.
func (*PushResponse) ProtoMessage() {}

// Marshal encodes the response in protobuf wire format.
func (r *PushResponse) Marshal() ([]byte, error) {
	var b []byte
	b = appendVarintField(b, 1, r.SamplesWritten)
	b = appendVarintField(b, 2, r.HistogramsWritten)
	b = appendVarintField(b, 3, r.ExemplarsWritten)
	for _, rej := range r.Rejections {
		var rb []byte
		rb = appendStringField(rb, 1, rej.Reason)
		rb = appendStringField(rb, 2, rej.Series)
		rb = appendStringField(rb, 3, rej.Message)
		rb = appendVarintField(rb, 4, rej.Count)
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, rb)
	}
	b = appendVarintField(b, 5, r.MetadataWritten)
	return b, nil
}

// Unmarshal decodes a protobuf-encoded response, skipping unknown fields so newer
// ingesters can add fields without breaking older distributors.
func (r *PushResponse) Unmarshal(b []byte) error {
	*r = PushResponse{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("push response: bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("push response: samples_written: %w", protowire.ParseError(n))
			}
			r.SamplesWritten, b = int64(v), b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("push response: histograms_written: %w", protowire.ParseError(n))
			}
			r.HistogramsWritten, b = int64(v), b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("push response: exemplars_written: %w", protowire.ParseError(n))
			}
			r.ExemplarsWritten, b = int64(v), b[n:]
		case num == 5 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("push response: metadata_written: %w", protowire.ParseError(n))
			}
			r.MetadataWritten, b = int64(v), b[n:]
		case num == 4 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("push response: rejection: %w", protowire.ParseError(n))
			}
			var rej Rejection
			if err := rej.unmarshal(v); err != nil {
				return err
			}
			r.Rejections = append(r.Rejections, rej)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("push response: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

func (rej *Rejection) unmarshal(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("rejection: bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num >= 1 && num <= 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return fmt.Errorf("rejection: field %d: %w", num, protowire.ParseError(n))
			}
			switch num {
			case 1:
				rej.Reason = v
			case 2:
				rej.Series = v
			case 3:
				rej.Message = v
			}
			b = b[n:]
		case num == 4 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("rejection: count: %w", protowire.ParseError(n))
			}
			rej.Count, b = int64(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("rejection: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if rej.Reason == "" {
		return errors.New("rejection: missing reason")
	}
	return nil
}

func appendVarintField(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b // proto3: zero values are not encoded
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}
