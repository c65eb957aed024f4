package client

import (
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
)

// ZLabelsFromPromLabels converts Prometheus labels to Thanos wire labels.
//
// Do not use labelpb.ZLabelsFromPromLabels / ZLabelsToPromLabels / ZLabelSet.PromLabels
// in Vigil: they reinterpret memory with unsafe and assume labels.Labels is a slice,
// but Prometheus v0.3x builds labels.Labels as a single string by default
// (stringlabels), so those helpers produce garbage and crash marshalling.
func ZLabelsFromPromLabels(lset labels.Labels) []labelpb.ZLabel {
	out := make([]labelpb.ZLabel, 0, lset.Len())
	lset.Range(func(l labels.Label) {
		out = append(out, labelpb.ZLabel{Name: l.Name, Value: l.Value})
	})
	return out
}

// PromLabelsFromZLabels converts Thanos wire labels to Prometheus labels, copying the
// strings so the result does not pin the gRPC receive buffer. The input must be sorted
// (as every Store API response is); use labels.New otherwise.
func PromLabelsFromZLabels(zl []labelpb.ZLabel) labels.Labels {
	b := labels.NewScratchBuilder(len(zl))
	for _, l := range zl {
		b.Add(l.Name, l.Value)
	}
	return b.Labels()
}
