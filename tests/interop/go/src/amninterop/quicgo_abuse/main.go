// SPDX-License-Identifier: MIT OR Apache-2.0
// quicgo_abuse: a hostile gRPC-over-HTTP/3 client (quic-go's http3, an
// independent stack) with a valid client certificate, for the memory-bound
// tests. It opens -streams Execute calls at once, each uploading one
// -size-byte message, with receive windows of a few KiB that it never
// opens further: it reads no response, so the server cannot send its
// answers. It stops when every upload is done or nothing moved for -stall,
// holds the connection for -hold, and samples the server's resident memory
// (/proc/PID/status) throughout. One line of JSON: bytes uploaded, uploads
// finished, the peak resident memory seen (kB).
//
// With -attack partial or slowheaders it writes its requests on raw QUIC
// streams instead, stopping half-way through each (raw.go); with -attack
// initials it floods the server with handshakes it never finishes
// (initials.go).
//
// Usage: quicgo_abuse -addr HOST:PORT -pki DIR -pid PID [-streams 200] [-size 1048576]
//
//	quicgo_abuse -attack partial|slowheaders ... [-part BYTES] [-trickle 250ms] [-max 20s] [-hold 5s]
//	quicgo_abuse -attack initials ... [-streams DIALS] [-conc 100] [-max 5ms]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"amninterop/common"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
)

func rssKB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(sc.Text())[1], 10, 64)
			return v
		}
	}
	return 0
}

// counting is a request body that counts the bytes the transport took.
type counting struct {
	r    io.Reader
	sent *int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	atomic.AddInt64(c.sent, int64(n))
	return n, err
}

// message: a gRPC message holding a QueryRequest whose query_bytes make it size bytes.
func message(size int) []byte {
	var n, vl int
	for vl = 1; vl <= 5; vl++ {
		n = size - 1 - vl
		var tmp [10]byte
		if binary.PutUvarint(tmp[:], uint64(n)) == vl {
			break
		}
	}
	out := make([]byte, 5, 5+size)
	binary.BigEndian.PutUint32(out[1:], uint32(size))
	out = append(out, 0x0a)
	out = binary.AppendUvarint(out, uint64(n))
	return append(out, bytes.Repeat([]byte{'q'}, n)...)
}

func main() {
	addr := flag.String("addr", "", "server address HOST:PORT")
	pki := flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	pid := flag.Int("pid", 0, "the server's pid")
	streams := flag.Int("streams", 200, "calls at once")
	size := flag.Int("size", 1<<20, "message size")
	stall := flag.Duration("stall", 3*time.Second, "stop when nothing moved for this long")
	hold := flag.Duration("hold", time.Second, "keep the connection this long after stopping")
	attack := flag.String("attack", "noread", "noread, partial, slowheaders or initials")
	conc := flag.Int("conc", 100, "initials: dials at once")
	part := flag.Int("part", 0, "partial: bytes of each message sent")
	trickle := flag.Duration("trickle", 250*time.Millisecond, "slowheaders: one byte of each stream this often")
	max := flag.Duration("max", 20*time.Second, "partial, slowheaders: give up after this long; initials: each dial")
	flag.Parse()
	tlsConf := common.ClientTLS(filepath.Join(*pki, "ca.pem"), filepath.Join(*pki, "client.pem"),
		filepath.Join(*pki, "client-key.pem"), "localhost")
	if *attack == "initials" {
		runInitials(*addr, tlsConf, *streams, *conc, *max, *pid)
		return
	}
	if *attack != "noread" {
		tlsConf.NextProtos = []string{"h3"}
		conn, err := quic.DialAddr(*addr, tlsConf, &quic.Config{MaxIdleTimeout: time.Minute,
			HandshakeIdleTimeout: 10 * time.Second, MaxIncomingUniStreams: 16})
		if err != nil {
			common.Fatal("connect: %v", err)
		}
		runRaw(rawOpts{attack: *attack, addr: *addr, streams: *streams, size: *size, part: *part, trickle: *trickle,
			max: *max, hold: *hold, pid: *pid}, conn)
		return
	}
	rt := &http3.RoundTripper{TLSClientConfig: tlsConf, DisableCompression: true, QuicConfig: &quic.Config{
		InitialStreamReceiveWindow: 4 << 10, MaxStreamReceiveWindow: 4 << 10,
		InitialConnectionReceiveWindow: 16 << 10, MaxConnectionReceiveWindow: 16 << 10,
		MaxIdleTimeout: time.Minute, HandshakeIdleTimeout: 10 * time.Second}}
	body := message(*size)
	var sent, done int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+*addr+"/amaters.v1.AmateRS/Execute",
				&counting{bytes.NewReader(body), &sent})
			req.Header.Set("content-type", "application/grpc")
			req.Header.Set("te", "trailers")
			req.ContentLength = -1
			if res, err := rt.RoundTrip(req); err == nil {
				atomic.AddInt64(&done, 1)
				<-ctx.Done() // the response is never read
				res.Body.Close()
			}
		}()
	}
	peak, last, lastMove := rssKB(*pid), int64(-1), time.Now()
	for time.Since(lastMove) < *stall {
		time.Sleep(50 * time.Millisecond)
		if r := rssKB(*pid); r > peak {
			peak = r
		}
		if s := atomic.LoadInt64(&sent); s != last {
			last, lastMove = s, time.Now()
		}
		if atomic.LoadInt64(&done) == int64(*streams) && atomic.LoadInt64(&sent) >= int64(*streams)*int64(len(body)) {
			break
		}
	}
	for end := time.Now().Add(*hold); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if r := rssKB(*pid); r > peak {
			peak = r
		}
	}
	fmt.Printf("{\"attack\": \"noread\", \"sent_bytes\": %d, \"streams\": %d, \"answered\": %d, \"peak_rss_kb\": %d}\n",
		atomic.LoadInt64(&sent), *streams, atomic.LoadInt64(&done), peak)
	cancel()
	rt.Close()
	wg.Wait()
}
