package main

import (
	"context"
	"errors"

	"github.com/pgmtun/pgmtun/stack"
)

var errTODO = errors.New("not implemented yet")

func tunLimit(read bool) func(context.Context, *Run) (Metrics, error) {
	return func(context.Context, *Run) (Metrics, error) { return nil, errTODO }
}
func pgmtunToOpenPGM(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(context.Context, *Run) (Metrics, error) { return nil, errTODO }
}
func openPGMToPgmtun(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(context.Context, *Run) (Metrics, error) { return nil, errTODO }
}
func tapThroughput(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(context.Context, *Run) (Metrics, error) { return nil, errTODO }
}
func tunLossTransfer(e *Env) func(context.Context, *Run, int, int, float64, int64) (recvResult, stack.SenderStats, error) {
	return func(context.Context, *Run, int, int, float64, int64) (recvResult, stack.SenderStats, error) {
		return recvResult{}, stack.SenderStats{}, errTODO
	}
}
