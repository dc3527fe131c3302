package conformance

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// TestOneProtocolNumber: PGM's IP protocol number is wire's; pcapio, below
// wire, writes it out and must agree, and it is what IANA assigned.
func TestOneProtocolNumber(t *testing.T) {
	assert.Equal(t, 113, wire.IPProtocol)
	assert.Equal(t, wire.IPProtocol, pcapio.ProtoPGM)
	assert.EqualValues(t, wire.IPProtocol, stack.ProtocolNumber)
}
