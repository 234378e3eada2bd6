package main

import "github.com/huskrt/husk/internal/pausesetup"

// The setup program's encoding (internal/pausesetup), as constants the
// assembly reads through go_asm.h.
const (
	setupMagic      = pausesetup.Magic
	setupHeaderSize = pausesetup.HeaderSize
	setupStepSize   = pausesetup.StepSize
	setupMax        = pausesetup.MaxSize
	setupFlagSave   = pausesetup.FlagSave
	setupFlagArg0   = pausesetup.FlagArg0Saved
	exitStepFailed  = pausesetup.ExitStepFailed
	exitBadProgram  = pausesetup.ExitBadProgram
)

// infraFlag makes husk-pause run the setup program it reads on fd 3
// before it pauses (see internal/pausesetup).
const infraFlag = "-infra"
