//go:build slicelabels || dedupelabels

package ingester

import "strings"

// With these labels implementations, labels.ScratchBuilder keeps the strings it is
// given (stringlabels, the default, copies them into one new string). Request labels
// may alias a receive buffer that is reused after Push returns (client.Codec, and the
// distributor's pooled remote-write buffers on the in-process path), so copy them.
func ownString(s string) string { return strings.Clone(s) }
