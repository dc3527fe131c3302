package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// interruptContext returns a context cancelled by SIGINT or SIGTERM, so
// send and recv can stop cleanly: print their statistics and undo what
// they configured on the device (an attached device keeps no stray
// addresses or routes). Tests replace it to interrupt a run.
var interruptContext = signalContext

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
