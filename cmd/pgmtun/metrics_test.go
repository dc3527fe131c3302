package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/metrics"
	"github.com/pgmtun/pgmtun/internal/simrun"
	"github.com/pgmtun/pgmtun/internal/tshark"
)

func scrape(t *testing.T, url string) metrics.Snapshot {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var s metrics.Snapshot
	require.NoError(t, json.Unmarshal(b, &s), string(b))
	return s
}

// watchMetrics scrapes a command's endpoint every interval while it runs,
// and once more as it shuts down.
func watchMetrics(t *testing.T, interval time.Duration) (during func() []metrics.Snapshot, final func() metrics.Snapshot) {
	var mu sync.Mutex
	var snaps []metrics.Snapshot
	var last metrics.Snapshot
	stop := make(chan struct{})
	done := make(chan struct{})
	metricsStarted = func(addr string) {
		go func() {
			defer close(done)
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					s := scrape(t, "http://"+addr+"/metrics.json")
					mu.Lock()
					snaps = append(snaps, s)
					mu.Unlock()
				}
			}
		}()
	}
	metricsClosing = func(addr string) {
		close(stop)
		<-done
		last = scrape(t, "http://"+addr+"/metrics.json")
	}
	t.Cleanup(func() { metricsStarted, metricsClosing = nil, nil })
	return func() []metrics.Snapshot {
			mu.Lock()
			defer mu.Unlock()
			return snaps
		}, func() metrics.Snapshot {
			return last
		}
}

// The endpoint scraped during a demo transfer shows the counters moving,
// and its last figures are the final --stats json's.
func TestDemoMetricsLive(t *testing.T) {
	checkNoLeaks(t)
	during, final := watchMetrics(t, 100*time.Millisecond)
	pcap := t.TempDir() + "/demo.pcap"
	code, out, errs := runWith(nil, "demo", "--receivers", "2", "--bytes", "300KiB", "--rate", "200kB/s",
		"--stats", "json", "--metrics", "127.0.0.1:0", "--pcap", pcap)
	require.Equal(t, exitOK, code, errs)
	var rep demoReport
	require.NoError(t, json.Unmarshal(out, &rep))

	var odata []uint64
	for _, s := range during() {
		if len(s.Senders) == 1 {
			odata = append(odata, s.Senders[0].PGM.TotalODataPacketsSent)
		}
	}
	require.GreaterOrEqual(t, len(odata), 5, "scrapes during a transfer of about 1.5 s")
	moving := 0
	for i := 1; i < len(odata); i++ {
		require.GreaterOrEqual(t, odata[i], odata[i-1], "a counter went back: %v", odata)
		if odata[i] > odata[i-1] {
			moving++
		}
	}
	assert.GreaterOrEqual(t, moving, 3, "ODATA counter while sending: %v", odata)

	f := final()
	require.Len(t, f.Senders, 1)
	require.Len(t, f.Stacks, 3)
	got, want := f.Senders[0].PGM, rep.Sender.PGM
	assert.Equal(t, want.TotalODataPacketsSent, got.TotalODataPacketsSent)
	assert.Equal(t, want.DataBytesSent, got.DataBytesSent)
	assert.Equal(t, want.RepairPacketsSent, got.RepairPacketsSent)
	assert.Equal(t, want.NaksReceived, got.NaksReceived)
	assert.Equal(t, want.NCFsSent, got.NCFsSent)
	assert.Equal(t, rep.Sender.Session, f.Senders[0].Session)
	require.Len(t, f.Receivers, 2)
	for i, r := range f.Receivers {
		w := rep.Results[i].PGM
		assert.Equal(t, "r"+string(rune('1'+i)), r.Stack)
		assert.Equal(t, w.NumODataPacketsReceived, r.PGM.NumODataPacketsReceived)
		assert.Equal(t, w.NumRDataPacketsReceived, r.PGM.NumRDataPacketsReceived)
		assert.Equal(t, w.APDUsDelivered, r.PGM.APDUsDelivered)
		assert.Equal(t, w.NAKPacketsSent, r.PGM.NAKPacketsSent)
		assert.Equal(t, w.DataBytesReceived, r.PGM.DataBytesReceived)
	}

	// The LAN capture holds every packet once and decodes clean.
	byType := tshark.CheckPGM(t, pcap, nil)
	assert.Equal(t, int(want.TotalODataPacketsSent), byType["0x04"])
	assert.Equal(t, int(want.RepairPacketsSent), byType["0x05"])
}

// A simulation's last published figures are its report's.
func TestSimMetricsFinal(t *testing.T) {
	_, final := watchMetrics(t, time.Hour)
	code, out, errs := runWith(nil, "sim", "--receivers", "4", "--bytes", "512KiB", "--stats", "json", "--metrics", "127.0.0.1:0")
	require.Equal(t, exitOK, code, errs)
	var rep simrun.Report
	require.NoError(t, json.Unmarshal(out, &rep))
	f := final()
	require.Len(t, f.Sims, 1)
	s := f.Sims[0]
	assert.Equal(t, 4, s.Ended)
	assert.Equal(t, rep.Source.TotalODataPacketsSent, s.Source.TotalODataPacketsSent)
	assert.Equal(t, rep.Source.RepairPacketsSent, s.Source.RepairPacketsSent)
	assert.Equal(t, rep.Source.NaksReceived, s.Source.NaksReceived)
	assert.Equal(t, rep.Link.Copies, s.Copies)
	var naks uint64
	for _, r := range rep.Results {
		naks += r.NAKs
	}
	assert.Equal(t, naks, s.ReceiverSum.NAKPacketsSent)
	assert.InDelta(t, rep.Seconds, s.VirtualSeconds, 1e-9)
}

// send's endpoint: counters move while it sends, and end where its
// --stats json does.
func TestSendMetricsLive(t *testing.T) {
	during, final := watchMetrics(t, 100*time.Millisecond)
	data := randomBytes(5, 600_000)
	tr := sendRecv(t, data, []string{"--rdm", "--stats", "json"}, []string{"--size", "1000", "--rate", "400kB/s", "--metrics", "127.0.0.1:0"}, nil)
	require.Equal(t, exitOK, tr.sendCode, tr.sendErr)
	require.Equal(t, exitOK, tr.recvCode, tr.recvErr)
	require.Equal(t, data, tr.out)
	i := strings.Index(tr.sendErr, "{")
	require.GreaterOrEqual(t, i, 0, tr.sendErr)
	var rep senderReport
	require.NoError(t, json.NewDecoder(strings.NewReader(tr.sendErr[i:])).Decode(&rep))

	assertODATAMoving(t, during(), "sending")
	f := final()
	require.Len(t, f.Senders, 1)
	require.Len(t, f.Stacks, 1)
	assert.Equal(t, "netstack", f.Stacks[0].Stack)
	assert.GreaterOrEqual(t, f.Stacks[0].PGM.PacketsSent, rep.PGM.TotalODataPacketsSent)
	assert.Equal(t, rep.Session, f.Senders[0].Session)
	assert.Equal(t, rep.PGM.TotalODataPacketsSent, f.Senders[0].PGM.TotalODataPacketsSent)
	assert.Equal(t, rep.PGM.DataBytesSent, f.Senders[0].PGM.DataBytesSent)
	assert.Equal(t, rep.PGM.RepairPacketsSent, f.Senders[0].PGM.RepairPacketsSent)
}

// TestPubMetricsLive: pub's --metrics serves its netstack and its PGM
// sender while it publishes, and ends equal to its final --stats json.
func TestPubMetricsLive(t *testing.T) {
	m := useMemlink(t)
	during, final := watchMetrics(t, 100*time.Millisecond)
	data := randomBytes(9, 400_000)
	tr := m.pubSub(data, false, []string{"--size", "1000", "--rate", "400kB/s", "--stats", "json", "--metrics", "127.0.0.1:0"},
		[]string{"--count", "400"})
	require.Equal(t, exitOK, tr.sendCode, tr.sendErr)
	require.Equal(t, exitOK, tr.recvCode, tr.recvErr)
	require.Equal(t, data, tr.out)
	i := strings.Index(tr.sendErr, "{")
	require.GreaterOrEqual(t, i, 0, tr.sendErr)
	var rep pubsubReport
	require.NoError(t, json.NewDecoder(strings.NewReader(tr.sendErr[i:])).Decode(&rep))
	require.NotNil(t, rep.PGMSender)

	assertODATAMoving(t, during(), "publishing")
	f := final()
	require.Len(t, f.Senders, 1)
	assert.Equal(t, "publisher", f.Senders[0].Socket)
	assert.Equal(t, rep.PGMSender.TotalODataPacketsSent, f.Senders[0].PGM.TotalODataPacketsSent)
	require.Len(t, f.Stacks, 1)
}

// assertODATAMoving checks that the one sender's ODATA counter rose in at
// least three of the scrapes taken while it was at work.
func assertODATAMoving(t *testing.T, snaps []metrics.Snapshot, doing string) {
	t.Helper()
	var odata []uint64
	for _, s := range snaps {
		if len(s.Senders) == 1 {
			odata = append(odata, s.Senders[0].PGM.TotalODataPacketsSent)
		}
	}
	moving := 0
	for i := 1; i < len(odata); i++ {
		if odata[i] > odata[i-1] {
			moving++
		}
	}
	assert.GreaterOrEqual(t, moving, 3, "ODATA counter while %s: %v", doing, odata)
}
