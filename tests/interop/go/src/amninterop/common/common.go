// SPDX-License-Identifier: MIT OR Apache-2.0
// Package common holds what the Go interop peers share: check counting in
// the style of tests/interop/lib.sh, TLS configurations from PEM files, the
// gRPC length-prefixed message framing, and the HTTP/3 frame handling that
// quic-go 0.29's http3 package lacks (response trailers).
package common

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"sort"
	"strings"
	"syscall"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
	"github.com/lucas-clemente/quic-go/quicvarint"
	"github.com/marten-seemann/qpack"
)

// Checks counts passed and failed checks, one line each.
type Checks struct{ Pass, Fail int }

// Check records one check: ok, or FAIL with the detail that explains it.
func (c *Checks) Check(name string, ok bool, detail string, args ...interface{}) {
	if ok {
		c.Pass++
		fmt.Printf("ok   - %s\n", name)
		return
	}
	c.Fail++
	fmt.Printf("FAIL - %s: %s\n", name, fmt.Sprintf(detail, args...))
}

// Exit prints the closing line and exits non-zero if any check failed.
func (c *Checks) Exit(prog string) {
	fmt.Printf("%s: %d passed, %d failed\n", prog, c.Pass, c.Fail)
	if c.Fail > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

// Fatal reports a set-up error (not a check) and exits 2.
func Fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// CertPool reads a PEM CA bundle.
func CertPool(caFile string) *x509.CertPool {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		Fatal("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		Fatal("no certificate in %s", caFile)
	}
	return pool
}

// ClientTLS: verify the server against caFile for serverName; present
// certFile/keyFile unless they are empty.
func ClientTLS(caFile, certFile, keyFile, serverName string) *tls.Config {
	cfg := &tls.Config{RootCAs: CertPool(caFile), ServerName: serverName, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			Fatal("load client key pair: %v", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg
}

// ServerTLS: present certFile/keyFile, require a client certificate issued by caFile.
func ServerTLS(caFile, certFile, keyFile string) *tls.Config {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		Fatal("load server key pair: %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{kp}, ClientCAs: CertPool(caFile),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
}

// ServerFlags parses the servers' command line: -listen HOST:PORT (default
// 127.0.0.1:0) and the mTLS files -cert, -key, -ca; returns the listen
// address and the server TLS configuration.
func ServerFlags(prog string) (string, *tls.Config) {
	listen := flag.String("listen", "127.0.0.1:0", "HOST:PORT")
	cert := flag.String("cert", "", "server certificate")
	key := flag.String("key", "", "server key")
	ca := flag.String("ca", "", "CA of the client certificates")
	flag.Parse()
	if *cert == "" || *key == "" || *ca == "" {
		Fatal("usage: %s -listen HOST:PORT -cert F -key F -ca F", prog)
	}
	return *listen, ServerTLS(*ca, *cert, *key)
}

// OnSignal runs stop (in its own goroutine) at the first SIGTERM or SIGINT.
func OnSignal(stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		stop()
	}()
}

// Frame prefixes msg with gRPC's 5-byte header (uncompressed).
func Frame(msg []byte) []byte {
	out := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:5], uint32(len(msg)))
	copy(out[5:], msg)
	return out
}

// ReadMessage reads one length-prefixed gRPC message; io.EOF at a clean end.
func ReadMessage(r io.Reader, max uint32) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 0 {
		return nil, fmt.Errorf("compressed-flag %d on a message", hdr[0])
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > max {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", n, max)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("truncated message: %v", err)
	}
	return msg, nil
}

// RawStream returns the QUIC stream under an http3.Stream (the request body
// on a server, the response body on a client, from HTTPStreamer). quic-go
// 0.29 wraps it in an unexported type that frames writes as DATA and, when
// reading, skips HEADERS frames without consuming their payload, so trailers
// can neither be written nor read through it. Its embedded quic.Stream is an
// exported field, which reflection can reach.
func RawStream(s http3.Stream) quic.Stream {
	v := reflect.ValueOf(s)
	if v.Kind() == reflect.Ptr {
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct {
		if f := v.FieldByName("Stream"); f.IsValid() && f.CanInterface() {
			if q, ok := f.Interface().(quic.Stream); ok {
				return q
			}
		}
	}
	return s // not wrapped
}

// H3Body reads an HTTP/3 message body from the raw stream: DATA frames are
// its content, a HEADERS frame after them is the trailer section.
type H3Body struct {
	src      io.Reader
	left     uint64
	Trailers map[string]string // set once the trailing HEADERS frame was read
	done     bool
}

func NewH3Body(r io.Reader) *H3Body { return &H3Body{src: r} }

func (b *H3Body) Read(p []byte) (int, error) {
	for b.left == 0 {
		if b.done {
			return 0, io.EOF
		}
		t, l, err := b.frameHeader()
		if err != nil {
			return 0, err
		}
		switch t {
		case 0x0: // DATA
			b.left = l
		case 0x1: // HEADERS: the trailers
			block := make([]byte, l)
			if _, err := io.ReadFull(b.src, block); err != nil {
				return 0, fmt.Errorf("trailer block: %v", err)
			}
			fields, err := qpack.NewDecoder(nil).DecodeFull(block)
			if err != nil {
				return 0, fmt.Errorf("trailer block: %v", err)
			}
			b.Trailers = map[string]string{}
			for _, f := range fields {
				b.Trailers[f.Name] = f.Value
			}
			b.done = true
			// nothing may follow the trailers
			var one [1]byte
			if n, _ := b.src.Read(one[:]); n != 0 {
				return 0, errors.New("data after the trailer section")
			}
			return 0, io.EOF
		default: // reserved / unknown frame types are skipped (RFC 9114 9)
			if _, err := io.CopyN(io.Discard, b.src, int64(l)); err != nil {
				return 0, err
			}
		}
	}
	if uint64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.src.Read(p)
	b.left -= uint64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	} else if err == io.EOF {
		err = nil
		if n == 0 {
			b.done = true
			return 0, io.EOF
		}
	}
	return n, err
}

func (b *H3Body) frameHeader() (uint64, uint64, error) {
	br := byteReader{b.src}
	t, err := quicvarint.Read(br)
	if err != nil {
		b.done = true
		if err == io.EOF {
			return 0, 0, io.EOF
		}
		return 0, 0, err
	}
	l, err := quicvarint.Read(br)
	if err != nil {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return t, l, nil
}

type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var c [1]byte
	_, err := io.ReadFull(b.r, c[:])
	return c[0], err
}

// WriteTrailers writes a HEADERS frame holding fields (lower-case names,
// sorted for a stable encoding) to the raw stream w.
func WriteTrailers(w io.Writer, fields map[string]string) error {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for _, k := range names {
		if err := enc.WriteField(qpack.HeaderField{Name: strings.ToLower(k), Value: fields[k]}); err != nil {
			return err
		}
	}
	var frame bytes.Buffer
	quicvarint.Write(&frame, 0x1)
	quicvarint.Write(&frame, uint64(block.Len()))
	frame.Write(block.Bytes())
	_, err := w.Write(frame.Bytes())
	return err
}
