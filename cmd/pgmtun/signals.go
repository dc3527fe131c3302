package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// interruptContext returns a context cancelled by SIGINT or SIGTERM, so
// send and recv can stop cleanly: print their statistics and undo what
// they configured on the device (an attached device keeps no stray
// addresses or routes). A second signal closes the channel
// interruptedAgain(ctx) returns (send then aborts). SIGPIPE is caught
// too: a write to a closed pipe then fails with EPIPE rather than killing
// the process, so recv reports it and cleans up. Tests replace it to
// interrupt a run.
var interruptContext = signalContext

// againKey is the context key of the second-signal channel.
type againKey struct{}

func signalContext() (context.Context, context.CancelFunc) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	// Notify, not Ignore: with SIGPIPE ignored a child process we
	// started would inherit that.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	again := make(chan struct{})
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for n := 1; ; n++ {
			select {
			case <-sigs:
				switch n {
				case 1:
					cancel()
				case 2:
					close(again)
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			signal.Stop(sigs)
			signal.Stop(pipe)
			close(done)
			<-exited
			cancel()
		})
	}
	return context.WithValue(ctx, againKey{}, (<-chan struct{})(again)), stop
}

// interruptedAgain returns the channel closed by a second SIGINT or
// SIGTERM, or nil (never ready) if ctx does not carry one.
func interruptedAgain(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(againKey{}).(<-chan struct{})
	return ch
}
