//go:build !slicelabels && !dedupelabels

package ingester

// ownString returns s in a form the TSDB may keep. The default (stringlabels)
// labels.ScratchBuilder copies every name and value into one new string when it builds
// labels, so nothing needs copying here; see labels_copy.go for the other builds.
func ownString(s string) string { return s }
