//go:build slicelabels || dedupelabels

package storegateway

import (
	"strings"

	"github.com/prometheus/prometheus/model/labels"
)

// ownLabels returns a copy of ls that does not point into a memory-mapped index. With
// these labels implementations Copy keeps the strings it is given, so each name and
// value is cloned.
func ownLabels(ls labels.Labels) labels.Labels {
	out := make([]labels.Label, 0, ls.Len())
	ls.Range(func(l labels.Label) {
		out = append(out, labels.Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)})
	})
	return labels.New(out...)
}
