package proxy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

const (
	// minPooled is the capacity of the smallest pooled buffer.
	minPooled = 4 << 10
	// poolClasses is how many power-of-two size classes are pooled: 4 KiB to
	// 16 MiB. Bigger buffers go back to the garbage collector.
	poolClasses = 13
)

// errOverBudget: the body did not fit in what the splice budget had left.
var errOverBudget = errors.New("body over the splice budget")

// bodyPools holds reusable buffers, class i having capacity minPooled<<i.
var bodyPools [poolClasses]sync.Pool

// gzipReaders holds reusable decompressors.
var gzipReaders sync.Pool

// sizeClass returns the smallest class whose buffers hold n bytes
// (poolClasses or more when none does).
func sizeClass(n int) int {
	if n <= minPooled {
		return 0
	}
	return bits.Len(uint((n - 1) / minPooled))
}

// capacityFor is the capacity of the buffers getBuffer(n) returns.
func capacityFor(n int) int {
	if c := sizeClass(n); c < poolClasses {
		return minPooled << c
	}
	return n
}

// getBuffer returns an empty buffer with room for at least n bytes
// (capacityFor(n)).
func getBuffer(n int) *[]byte {
	c := sizeClass(n)
	if c >= poolClasses {
		b := make([]byte, 0, n)
		return &b
	}
	if v, ok := bodyPools[c].Get().(*[]byte); ok {
		*v = (*v)[:0]
		return v
	}
	b := make([]byte, 0, minPooled<<c)
	return &b
}

// putBuffer hands a buffer from getBuffer back for reuse.
func putBuffer(b *[]byte) {
	c := sizeClass(cap(*b))
	if c < poolClasses && cap(*b) == minPooled<<c {
		bodyPools[c].Put(b)
	}
}

// readInto appends the rest of r to the pooled buffer buf. When buf is full
// and more follows, it moves to a buffer of at least twice the capacity (or
// of hint bytes, the whole body's length when known), reserved on res first;
// the reservation then holds that buffer only. It returns the buffer holding
// what was read (buf or its replacement; the caller puts it back, also on
// error). When the next buffer does not fit in the budget it stops with
// errOverBudget and returns, as rest, the reader of the body's remaining
// bytes (a byte read ahead, then r).
func readInto(buf *[]byte, r io.Reader, hint int64, res *reservation) (*[]byte, io.Reader, error) {
	for {
		b := *buf
		if len(b) == cap(b) {
			// Full: a body of exactly this size ends here, else grow.
			var probe [1]byte
			n, err := io.ReadFull(r, probe[:])
			if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				return buf, r, nil
			}
			if err != nil {
				return buf, r, err
			}
			size := capacityFor(int(max(2*int64(cap(b)), hint, minPooled)))
			if !res.grow(int64(size)) {
				return buf, io.MultiReader(bytes.NewReader(probe[:]), r), errOverBudget
			}
			bigger := getBuffer(size)
			*bigger = append(append(*bigger, b...), probe[0])
			putBuffer(buf)
			res.keep(int64(size))
			buf, b = bigger, *bigger
		}
		n, err := r.Read(b[len(b):cap(b)])
		*buf = b[:len(b)+n]
		switch {
		case err == io.EOF:
			return buf, r, nil
		case err != nil:
			return buf, r, err
		}
	}
}

// newGzipReader returns a pooled decompressor reading src; hand it back to
// gzipReaders when done.
func newGzipReader(src io.Reader) (*gzip.Reader, error) {
	if zr, ok := gzipReaders.Get().(*gzip.Reader); ok {
		if err := zr.Reset(src); err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return zr, nil
	}
	zr, err := gzip.NewReader(src)
	if err != nil {
		return nil, fmt.Errorf("gunzip: %w", err)
	}
	return zr, nil
}
