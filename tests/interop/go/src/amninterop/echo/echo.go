// SPDX-License-Identifier: MIT OR Apache-2.0
// Package echo is the echo contract the Go servers implement (grpc-go over
// HTTP/2 and the hand-written gRPC over quic-go's HTTP/3), so that both
// answer our client alike:
//
// Echo: result_bytes = query_bytes, server_proof = Proof; request metadata
// x-echo-* comes back as trailing metadata. Magic queries (also inside
// ExecuteStream): "status:CODE:MESSAGE" ends the call with that status;
// "deadline" answers the milliseconds left before the call's deadline
// ("none" without one); "sleep:MS" waits MS ms (or until the call ends)
// before answering. Health: "" and amaters.v1.AmateRS SERVING, DownService
// NOT_SERVING, any other name NOT_FOUND.
package echo

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// DownService is the health service name reported NOT_SERVING.
const DownService = "down.service"

// Proof is the server_proof of every echo response.
const Proof = "go proof"

// Status is a gRPC status to end the call with.
type Status struct {
	Code    codes.Code
	Message string
}

// Answer returns the result_bytes for query q, or the status that ends the call.
func Answer(ctx context.Context, q []byte) ([]byte, *Status) {
	s := string(q)
	switch {
	case strings.HasPrefix(s, "status:"):
		parts := strings.SplitN(s, ":", 3)
		n, err := strconv.Atoi(parts[1])
		if err != nil || n < 0 || n > 16 {
			return nil, &Status{codes.InvalidArgument, "bad magic status query " + strconv.Quote(s)}
		}
		msg := ""
		if len(parts) == 3 {
			msg = parts[2]
		}
		return nil, &Status{codes.Code(n), msg}
	case s == "deadline":
		d, ok := ctx.Deadline()
		if !ok {
			return []byte("none"), nil
		}
		return []byte(fmt.Sprint(time.Until(d).Milliseconds())), nil
	case strings.HasPrefix(s, "sleep:"):
		ms, err := strconv.Atoi(s[len("sleep:"):])
		if err != nil {
			return nil, &Status{codes.InvalidArgument, "bad magic sleep query " + strconv.Quote(s)}
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, &Status{codes.DeadlineExceeded, "call ended while sleeping"}
		}
	}
	return q, nil
}
