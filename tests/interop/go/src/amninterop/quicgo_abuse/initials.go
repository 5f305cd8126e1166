// SPDX-License-Identifier: MIT OR Apache-2.0
// -attack initials: a flood of QUIC handshakes that are never finished.
// -streams dials in total, at most -conc at once, each from its own UDP
// socket (a new source port: a new client as the server sees it) and given
// up after -max (a few ms: the client sends its Initial, maybe once more,
// and goes away; whatever the server answers reaches a closed port). A dial
// that completes within that time is closed at once. One line of JSON:
// dials made, how many completed (the server would have served them), the
// peak resident memory of the server (kB).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lucas-clemente/quic-go"
)

func runInitials(addr string, tlsConf *tls.Config, dials, conc int, giveUp time.Duration, pid int) {
	tlsConf.NextProtos = []string{"h3"}
	var made, completed int64
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	peak := rssKB(pid)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // the server's memory while the flood lasts
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if r := rssKB(pid); r > peak {
					peak = r
				}
			}
		}
	}()
	for i := 0; i < dials; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), giveUp)
			defer cancel()
			atomic.AddInt64(&made, 1)
			conn, err := quic.DialAddrContext(ctx, addr, tlsConf, &quic.Config{HandshakeIdleTimeout: giveUp})
			if err == nil {
				atomic.AddInt64(&completed, 1)
				conn.CloseWithError(0, "")
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	fmt.Printf("{\"dials\":%d,\"completed\":%d,\"peak_rss_kb\":%d}\n", made, completed, peak)
}
