package pcapio

import (
	"encoding/binary"
	"time"
)

// Builders for synthetic capture files in every flavour the reader accepts.

type pcapFile struct {
	order binary.ByteOrder
	nano  bool
	link  uint32
	buf   []byte
}

func newPcapFile(order binary.ByteOrder, nano bool, link uint32) *pcapFile {
	f := &pcapFile{order: order, nano: nano, link: link}
	h := make([]byte, pcapHeaderLen)
	magic := uint32(pcapMagicMicro)
	if nano {
		magic = pcapMagicNano
	}
	order.PutUint32(h[0:], magic)
	order.PutUint16(h[4:], 2)
	order.PutUint16(h[6:], 4)
	order.PutUint32(h[16:], 65535)
	order.PutUint32(h[20:], link)
	f.buf = h
	return f
}

func (f *pcapFile) add(ts time.Time, data []byte, origLen int) *pcapFile {
	h := make([]byte, pcapRecordHeaderLen)
	f.order.PutUint32(h[0:], uint32(ts.Unix()))
	frac := uint32(ts.Nanosecond())
	if !f.nano {
		frac /= 1000
	}
	f.order.PutUint32(h[4:], frac)
	f.order.PutUint32(h[8:], uint32(len(data)))
	f.order.PutUint32(h[12:], uint32(origLen))
	f.buf = append(append(f.buf, h...), data...)
	return f
}

type ngFile struct {
	order binary.AppendByteOrder
	buf   []byte
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (f *ngFile) block(typ uint32, body []byte) *ngFile {
	body = pad4(body)
	total := uint32(12 + len(body))
	b := f.order.AppendUint32(nil, typ)
	b = f.order.AppendUint32(b, total)
	b = append(b, body...)
	b = f.order.AppendUint32(b, total)
	f.buf = append(f.buf, b...)
	return f
}

func (f *ngFile) option(b []byte, code uint16, v []byte) []byte {
	b = f.order.AppendUint16(b, code)
	b = f.order.AppendUint16(b, uint16(len(v)))
	return pad4(append(b, v...))
}

func (f *ngFile) shb() *ngFile {
	b := f.order.AppendUint32(nil, ngByteOrderMagic)
	b = f.order.AppendUint16(b, 1)
	b = f.order.AppendUint16(b, 0)
	b = f.order.AppendUint64(b, ^uint64(0))   // section length unknown
	b = f.option(b, 4, []byte("pcapio test")) // shb_userappl
	b = f.option(b, 0, nil)
	return f.block(ngBlockSHB, b)
}

// idb adds an interface; tsresol < 0 leaves the option out (microseconds).
func (f *ngFile) idb(link uint16, snap uint32, tsresol int, tsoffset int64) *ngFile {
	b := f.order.AppendUint16(nil, link)
	b = f.order.AppendUint16(b, 0)
	b = f.order.AppendUint32(b, snap)
	b = f.option(b, 2, []byte("if"+string(rune('a'+link%26)))) // if_name
	if tsresol >= 0 {
		b = f.option(b, ngOptTSResol, []byte{byte(tsresol)})
	}
	if tsoffset != 0 {
		b = f.option(b, ngOptTSOffset, f.order.AppendUint64(nil, uint64(tsoffset)))
	}
	b = f.option(b, 0, nil)
	return f.block(ngBlockIDB, b)
}

func (f *ngFile) epb(iface uint32, ts uint64, data []byte, origLen int) *ngFile {
	b := f.order.AppendUint32(nil, iface)
	b = f.order.AppendUint32(b, uint32(ts>>32))
	b = f.order.AppendUint32(b, uint32(ts))
	b = f.order.AppendUint32(b, uint32(len(data)))
	b = f.order.AppendUint32(b, uint32(origLen))
	b = pad4(append(b, data...))
	b = f.option(b, 1, []byte("comment")) // opt_comment
	b = f.option(b, 0, nil)
	return f.block(ngBlockEPB, b)
}

func (f *ngFile) spb(data []byte, origLen int) *ngFile {
	b := f.order.AppendUint32(nil, uint32(origLen))
	return f.block(ngBlockSPB, append(b, data...))
}

func (f *ngFile) opb(iface uint16, ts uint64, data []byte) *ngFile {
	b := f.order.AppendUint16(nil, iface)
	b = f.order.AppendUint16(b, 0)
	b = f.order.AppendUint32(b, uint32(ts>>32))
	b = f.order.AppendUint32(b, uint32(ts))
	b = f.order.AppendUint32(b, uint32(len(data)))
	b = f.order.AppendUint32(b, uint32(len(data)))
	return f.block(ngBlockOPB, append(b, data...))
}
