package main

// crayfish/tensor.py for Go: a Tensor is raw little-endian bytes in C order plus dtype and shape;
// checkTensor is from_tensor's validation, with the same messages.

import (
	"fmt"
	"math/big"

	pb "crayfish/go-worker/pb"
)

// dtypeNames are the numpy names of every DType, in code order (crayfish.tensor.DTYPE_NAMES).
var dtypeNames = []string{"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
	"uint16", "uint32", "uint64", "bool"}

// dtypeName of a DType code; "" for an unknown code.
func dtypeName(code int32) string {
	if code < 1 || int(code) > len(dtypeNames) {
		return ""
	}
	return dtypeNames[code-1]
}

// dtypeCode of a numpy dtype name; -1 when unknown.
func dtypeCode(name string) int32 {
	for i, n := range dtypeNames {
		if n == name {
			return int32(i + 1)
		}
	}
	return -1
}

func itemSize(code int32) int64 {
	switch pb.DType(code) {
	case pb.DType_DTYPE_FLOAT64, pb.DType_DTYPE_INT64, pb.DType_DTYPE_UINT64:
		return 8
	case pb.DType_DTYPE_FLOAT32, pb.DType_DTYPE_INT32, pb.DType_DTYPE_UINT32:
		return 4
	case pb.DType_DTYPE_FLOAT16, pb.DType_DTYPE_INT16, pb.DType_DTYPE_UINT16:
		return 2
	default:
		return 1
	}
}

// tensorError is crayfish.tensor.TensorError: a Tensor that failed from_tensor's checks.
type tensorError struct{ msg string }

func (e *tensorError) Error() string { return e.msg }

// checkTensor is from_tensor's checks (a nil tensor is the empty message); it returns the shape.
func checkTensor(t *pb.Tensor) ([]int64, error) {
	code := int32(t.GetDtype())
	name := dtypeName(code)
	if name == "" {
		return nil, &tensorError{fmt.Sprintf("unknown tensor dtype code %d", code)}
	}
	shape := append([]int64(nil), t.GetShape()...)
	count := big.NewInt(1)
	negative := false
	for _, d := range shape {
		negative = negative || d < 0
		count.Mul(count, big.NewInt(d))
	}
	if negative || count.Sign() < 0 {
		return nil, &tensorError{"negative dimension in shape " + pyTuple(shape)}
	}
	need := count.Mul(count, big.NewInt(itemSize(code)))
	if have := int64(len(t.GetData())); !need.IsInt64() || need.Int64() != have {
		return nil, &tensorError{fmt.Sprintf("tensor data has %d bytes, shape %s of %s needs %s", have,
			pyTuple(shape), name, need.String())}
	}
	return shape, nil
}

// zerosTensor is a tensor of zeros of dtype code, shape [rows, *item].
func zerosTensor(code int32, rows int64, item []int64) *pb.Tensor {
	shape := append([]int64{rows}, item...)
	n := rows
	for _, d := range item {
		n *= d
	}
	return &pb.Tensor{Dtype: pb.DType(code), Shape: shape, Data: make([]byte, n*itemSize(code))}
}
