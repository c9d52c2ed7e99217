package main

// serving/clients/scoring.py for Go: one crayfish.v1.Scoring gRPC channel per worker instance, a
// deadline on every call, gRPC status codes mapped to the serving layer's errors exactly as
// serving.errors.error_from_status does (so retries and dead-letter reasons match).

import (
	"context"
	"strconv"
	"time"

	pb "crayfish/go-worker/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const maxMessageBytes = 64 << 20

type scoringClient struct {
	target  string
	model   string
	timeout time.Duration
	conn    *grpc.ClientConn
	stub    pb.ScoringClient
	ids     int64
}

// callError is a failed call, named as the Python client names it (OverloadedError, ...).
type callError struct {
	pyType, msg string
	retriable   bool
	reason      string
}

func (e *callError) Error() string { return e.pyType + ": " + e.msg }

func newScoringClient(ext *external, model string) (*scoringClient, error) {
	creds := insecure.NewCredentials()
	if cert := ext.rootCertFile(); cert != "" {
		c, err := credentials.NewClientTLSFromFile(cert, "")
		if err != nil {
			return nil, configErrorf("external.client_options.root_cert_file: cannot read %s: %v", cert, err)
		}
		creds = c
	}
	conn, err := grpc.NewClient(ext.Target, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)))
	if err != nil {
		return nil, configErrorf("external.target: %v", err)
	}
	return &scoringClient{target: ext.Target, model: model, timeout: time.Duration(ext.TimeoutS * float64(time.Second)),
		conn: conn, stub: pb.NewScoringClient(conn)}, nil
}

// score sends the batch's tensors: by name (ScoreRequest.inputs) for a named batch, else input.
func (c *scoringClient) score(feeds map[string]*pb.Tensor, named bool) (answer, error) {
	req := &pb.ScoreRequest{Model: c.model, RequestId: strconv.FormatInt(c.ids, 10)}
	c.ids++
	if named {
		req.Inputs = feeds
	} else {
		for _, t := range feeds {
			req.Input = t
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := c.stub.Score(ctx, req)
	if err != nil {
		return answer{}, fromStatus(status.Convert(err))
	}
	a := answer{ServerInferenceNs: resp.InferenceNs, ServerQueue: resp.QueueNs, Server: resp.Server}
	if len(resp.Outputs) > 0 {
		a.Outputs = resp.Outputs
	} else {
		a.Output = resp.Output
	}
	for _, t := range append(mapValues(a.Outputs), a.Output) {
		if t == nil && a.Outputs != nil {
			continue
		}
		if _, err := checkTensor(t); err != nil {
			return answer{}, &callError{"TensorError", err.Error(), true, reasonScoringError}
		}
	}
	return a, nil
}

// fromStatus is serving.errors.error_from_status, plus sps_workers.external._retriable and the reason.
func fromStatus(st *status.Status) *callError {
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return &callError{"BadInputError", msg, false, reasonBadShape}
	case codes.NotFound:
		return &callError{"ModelNotFoundError", msg, false, reasonUnknownModel}
	case codes.ResourceExhausted:
		return &callError{"OverloadedError", msg, true, reasonScoringError}
	case codes.DeadlineExceeded:
		return &callError{"DeadlineExceededError", msg, true, reasonScoringError}
	case codes.Unavailable:
		return &callError{"UnavailableError", msg, true, reasonScoringError}
	case codes.Internal:
		return &callError{"BackendError", msg, false, reasonScoringError}
	default:
		return &callError{"ServingError", grpcCodeName(st.Code()) + ": " + msg, false, reasonScoringError}
	}
}

// grpcCodeName is the code as Python's grpc.StatusCode names it (UNKNOWN, PERMISSION_DENIED, ...).
func grpcCodeName(c codes.Code) string {
	names := map[codes.Code]string{codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.AlreadyExists: "ALREADY_EXISTS", codes.PermissionDenied: "PERMISSION_DENIED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
		codes.Unimplemented: "UNIMPLEMENTED", codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED"}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func mapValues(m map[string]*pb.Tensor) []*pb.Tensor {
	out := make([]*pb.Tensor, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func (c *scoringClient) close() { c.conn.Close() }
