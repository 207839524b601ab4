package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
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

// errTooLarge: the body exceeds the limit given to readBody.
var errTooLarge = errors.New("body too large")

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

// getBuffer returns an empty buffer with room for at least n bytes.
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

// readBody reads r to the end into a pooled buffer sized for hint bytes. The
// caller puts the buffer back once done with it, also on error.
func readBody(r io.Reader, hint, limit int64) (*[]byte, error) {
	if hint < 0 || hint > limit {
		hint = 0
	}
	return readInto(getBuffer(int(hint)), r, limit)
}

// readInto appends the rest of r to the pooled buffer buf, growing it by
// whole size classes when full; it returns the buffer holding everything
// (buf or its replacement). More than limit bytes in all is errTooLarge.
func readInto(buf *[]byte, r io.Reader, limit int64) (*[]byte, error) {
	for {
		b := *buf
		if len(b) == cap(b) {
			// Full: a body of exactly the hinted size ends here, else grow.
			var probe [1]byte
			n, err := io.ReadFull(r, probe[:])
			if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				return buf, nil
			}
			if err != nil {
				return buf, err
			}
			if int64(len(b)) >= limit {
				return buf, errTooLarge
			}
			bigger := getBuffer(2 * max(cap(b), minPooled))
			*bigger = append(append(*bigger, b...), probe[0])
			putBuffer(buf)
			buf, b = bigger, *bigger
		}
		n, err := r.Read(b[len(b):cap(b)])
		*buf = b[:len(b)+n]
		if int64(len(*buf)) > limit {
			return buf, errTooLarge
		}
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return buf, err
		}
	}
}

// gunzip decompresses a whole gzip body into a pooled buffer, sized from the
// length the gzip trailer records. The caller puts the buffer back.
func gunzip(compressed []byte, limit int64) (*[]byte, error) {
	var hint int64
	if n := len(compressed); n >= 4 {
		hint = int64(binary.LittleEndian.Uint32(compressed[n-4:])) // ISIZE: length mod 2^32
	}
	zr, err := newGzipReader(bytes.NewReader(compressed))
	if err != nil {
		return getBuffer(0), err
	}
	defer gzipReaders.Put(zr)
	buf, err := readBody(zr, hint, limit)
	if err != nil && !errors.Is(err, errTooLarge) {
		err = fmt.Errorf("gunzip: %w", err)
	}
	return buf, err
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
