package main

// entry is the binary's entry point when it is built with
// -ldflags=-E=main.entry, as the Makefile does on amd64 (entry_amd64.s):
// pause.c's behaviour, and the infra's setup, in system calls alone. The
// Go runtime never starts there: one thread, no heap, and only the pages
// the process writes (its stack, and setupBuf's first pages) are its own.
// main is then never run; it stays the entry point of a plain go build.
func entry()

// setupBuf holds the setup program read on fd 3 (-infra).
var setupBuf [setupMax]byte

// Both are reached only from the assembly and the ELF header.
var _, _ = entry, &setupBuf
