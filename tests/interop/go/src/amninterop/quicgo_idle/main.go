// SPDX-License-Identifier: MIT OR Apache-2.0
// quicgo_idle: a QUIC client (quic-go, an independent stack) that connects
// to an HTTP/3 server over mutual TLS and then makes no request at all,
// only keeping its connection alive with a PING every -ping. It reports how
// the connection ended and when: one line
//   closed after S s: REASON
// (REASON as quic-go gives it, e.g. the server's application error code),
// or "still open after S s" when -max passed first (exit 1).
//
// With -reset-control it first opens its HTTP/3 control stream (type 0x00
// and an empty SETTINGS frame) and then resets it (RESET_STREAM), which
// RFC 9114 6.2.1 makes a connection error H3_CLOSED_CRITICAL_STREAM (0x104).
//
// Usage: quicgo_idle -addr 127.0.0.1:PORT -pki DIR [-ping 500ms] [-max 20s] [-reset-control]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"amninterop/common"

	"github.com/lucas-clemente/quic-go"
)

func main() {
	addr := flag.String("addr", "", "server address HOST:PORT")
	pki := flag.String("pki", "", "directory with ca.pem, client.pem, client-key.pem")
	ping := flag.Duration("ping", 500*time.Millisecond, "PING period")
	max := flag.Duration("max", 20*time.Second, "give up after this long")
	resetControl := flag.Bool("reset-control", false, "open the control stream, then reset it")
	flag.Parse()
	tlsConf := common.ClientTLS(filepath.Join(*pki, "ca.pem"), filepath.Join(*pki, "client.pem"),
		filepath.Join(*pki, "client-key.pem"), "localhost")
	tlsConf.NextProtos = []string{"h3"}
	conf := &quic.Config{KeepAlivePeriod: *ping, MaxIdleTimeout: 10 * *max, HandshakeIdleTimeout: 10 * time.Second}
	t0 := time.Now()
	conn, err := quic.DialAddr(*addr, tlsConf, conf)
	if err != nil {
		fmt.Printf("connect failed: %v\n", err)
		os.Exit(2)
	}
	fmt.Printf("connected in %.2f s\n", time.Since(t0).Seconds())
	t0 = time.Now()
	if *resetControl {
		ctl, err := conn.OpenUniStream()
		if err != nil {
			fmt.Printf("cannot open the control stream: %v\n", err)
			os.Exit(2)
		}
		ctl.Write([]byte{0x00, 0x04, 0x00}) // stream type control, SETTINGS (empty)
		time.Sleep(100 * time.Millisecond)
		ctl.CancelWrite(0x100) // RESET_STREAM
	}
	// the server's unidirectional streams (HTTP/3 control, QPACK) are taken
	// and left unread; AcceptUniStream fails once the connection is closed
	ctx, cancel := context.WithTimeout(context.Background(), *max)
	defer cancel()
	for {
		if _, err := conn.AcceptUniStream(ctx); err != nil {
			if ctx.Err() != nil {
				fmt.Printf("still open after %.2f s\n", time.Since(t0).Seconds())
				conn.CloseWithError(0, "")
				os.Exit(1)
			}
			fmt.Printf("closed after %.2f s: %v\n", time.Since(t0).Seconds(), err)
			return
		}
	}
}
