package cri

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// withItems puts items, each the encoding of one element of msg's
// repeated message field named field, in msg as they are: as unknown
// bytes that are that field's wire form, which the gRPC codec writes out
// without encoding anything again and the client reads as the field. The
// managers keep each object's encoded list item until the object changes
// (ListEncoded), since the kubelet relists every second.
func withItems[M proto.Message](msg M, field protoreflect.Name, items [][]byte) M {
	num := msg.ProtoReflect().Descriptor().Fields().ByName(field).Number()
	size := 0
	for _, it := range items {
		size += protowire.SizeTag(num) + protowire.SizeBytes(len(it))
	}
	raw := make([]byte, 0, size)
	for _, it := range items {
		raw = protowire.AppendTag(raw, num, protowire.BytesType)
		raw = protowire.AppendBytes(raw, it)
	}
	msg.ProtoReflect().SetUnknown(raw)
	return msg
}

// encodedChunks splits encoded items into runs of at least one item and at
// most streamChunkBytes unless one item alone is larger, as sendChunks.
func encodedChunks(items [][]byte, send func([][]byte) error) error {
	start, size := 0, 0
	for i, it := range items {
		if i > start && size+len(it) > streamChunkBytes {
			if err := send(items[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += len(it)
	}
	if start < len(items) {
		return send(items[start:])
	}
	return nil
}
