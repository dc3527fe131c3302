package zmtp_test

import (
	"fmt"

	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
)

// Messages queued together share TSDUs; a receiver decodes them back,
// whole, however the stream was cut.
func Example() {
	var enc zmtp.Encoder
	enc.Append([]byte("weather"), []byte("sunny"))
	enc.Append([]byte("news"), []byte("nothing happened"))
	enc.Append([]byte("weather"), []byte("rain"))

	dec := zmtp.NewDecoder(zmtp.Limits{})
	buf := make([]byte, 0, 16)
	for tsdu := enc.Next(buf, 16); tsdu != nil; tsdu = enc.Next(buf, 16) {
		off, _ := zmtp.Offset(tsdu)
		fmt.Printf("TSDU of %d bytes, offset %#x\n", len(tsdu), off)
		dec.Feed(tsdu)
		for {
			msg, err := dec.Next()
			if err != nil {
				fmt.Println("dropped:", err)
				continue
			}
			if msg == nil {
				break
			}
			fmt.Printf("  %q\n", msg)
		}
	}
	// Output:
	// TSDU of 16 bytes, offset 0x0
	// TSDU of 16 bytes, offset 0x2
	//   ["weather" "sunny"]
	// TSDU of 16 bytes, offset 0xc
	//   ["news" "nothing happened"]
	// TSDU of 15 bytes, offset 0xffff
	//   ["weather" "rain"]
}

// A receiver that loses a TSDU (or joins late) resumes at the next
// message start and never sees part of a message: messages 1 and 2 end in
// the lost TSDU and message 3 begins in it.
func ExampleDecoder_Lost() {
	var enc zmtp.Encoder
	for i := range 6 {
		enc.Append([]byte(fmt.Sprintf("message %d", i)))
	}
	var tsdus [][]byte
	for t := enc.Next(nil, 20); t != nil; t = enc.Next(nil, 20) {
		tsdus = append(tsdus, t)
	}
	dec := &zmtp.Decoder{}
	for i, tsdu := range tsdus {
		if i == 1 {
			dec.Lost() // the session reported this TSDU lost
			continue
		}
		dec.Feed(tsdu)
		for msg, err := dec.Next(); msg != nil || err != nil; msg, err = dec.Next() {
			fmt.Printf("%q\n", msg)
		}
	}
	// Output:
	// ["message 0"]
	// ["message 4"]
	// ["message 5"]
}
