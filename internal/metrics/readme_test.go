package metrics

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every metric is in the README's list, and the list names no other.
func TestREADMEListsEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := string(b)
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(pgmtun_[a-z_]+)`").FindAllStringSubmatch(readme, -1) {
		listed[m[1]] = true
	}
	for _, m := range Metrics() {
		assert.True(t, listed[m.Name], "README does not list %s", m.Name)
		delete(listed, m.Name)
	}
	assert.Empty(t, listed, "README lists metrics that do not exist")
}
