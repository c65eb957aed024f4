//go:build !slicelabels && !dedupelabels

package storegateway

import "github.com/prometheus/prometheus/model/labels"

// ownLabels returns a copy of ls that does not point into a memory-mapped index. With
// the default labels implementation (stringlabels) the whole set is one string, copied
// at once; see labels_own_copy.go for the other builds.
func ownLabels(ls labels.Labels) labels.Labels { return ls.Copy() }
