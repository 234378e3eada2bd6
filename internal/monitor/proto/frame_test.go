package proto

import (
	"bytes"
	"testing"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, FrameStdout, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, FrameResize, Resize(120, 40)); err != nil {
		t.Fatal(err)
	}
	kind, n, err := ReadFrameHeader(&buf)
	if err != nil || kind != FrameStdout || n != 5 || string(buf.Next(int(n))) != "hello" {
		t.Fatalf("first frame: %d %d %v", kind, n, err)
	}
	kind, n, err = ReadFrameHeader(&buf)
	w, h, ok := ParseResize(buf.Next(int(n)))
	if err != nil || kind != FrameResize || !ok || w != 120 || h != 40 {
		t.Fatalf("resize frame: %d %v %d×%d %v", kind, err, w, h, ok)
	}
	if _, _, ok := ParseResize([]byte{1, 2, 3}); ok {
		t.Error("a 3-byte resize parsed")
	}
}
