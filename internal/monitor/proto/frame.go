package proto

import (
	"encoding/binary"
	"io"
)

// WriteFrame writes one attach frame: type, big-endian length, payload.
func WriteFrame(w io.Writer, kind byte, p []byte) error {
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// ReadFrameHeader reads the type and payload length of the next frame.
func ReadFrameHeader(r io.Reader) (kind byte, n uint32, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, err
	}
	return hdr[0], binary.BigEndian.Uint32(hdr[1:]), nil
}

// Resize is the payload of a FrameResize.
func Resize(width, height uint16) []byte {
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:2], width)
	binary.BigEndian.PutUint16(p[2:4], height)
	return p[:]
}

// ParseResize reads a FrameResize payload; ok is false when malformed.
func ParseResize(p []byte) (width, height uint16, ok bool) {
	if len(p) != 4 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4]), true
}
