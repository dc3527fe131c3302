package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPrintReceiverDeviceQueueDrops: recv's statistics say how many
// packets the kernel dropped at its device's queue, in text when there
// were any and in JSON always when recv has a device; without one (nil)
// neither mentions it.
func TestPrintReceiverDeviceQueueDrops(t *testing.T) {
	five, zero := uint64(5), uint64(0)
	for _, c := range []struct {
		name     string
		drops    *uint64
		text     bool // the text names the drops
		jsonHas  bool
		jsonWant uint64
	}{
		{"drops", &five, true, true, 5},
		{"none", &zero, false, true, 0},
		{"no device", nil, false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := receiverReport{Role: "receiver", Result: "ok", DeviceQueueDrops: c.drops}
			var text, js bytes.Buffer
			printReceiver(&text, statsText, &rep)
			printReceiver(&js, statsJSON, &rep)
			if c.text {
				assert.Regexp(t, `device queue\s+5 packets dropped by the kernel: not read in time`, text.String())
			} else {
				assert.NotContains(t, text.String(), "device queue")
			}
			var m map[string]any
			require.NoError(t, json.Unmarshal(js.Bytes(), &m))
			v, ok := m["device_queue_drops"]
			assert.Equal(t, c.jsonHas, ok, js.String())
			if ok {
				assert.EqualValues(t, c.jsonWant, v)
			}
		})
	}
}
