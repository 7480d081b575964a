// Package models holds the model bundled with ctlens, so that the command
// line, the REST server and the web UI can score a scan without a
// checkpoint of their own.
package models

import _ "embed" // for //go:embed

// Default is the bundled default checkpoint, a ctlens checkpoint
// (safetensors with the ctlens.spec, ctlens.class_names, ctlens.pipeline and
// ctlens.input metadata; see net3d.LoadCheckpoint and package score): a
// covidnet3d-small classifying CP, NCP and Normal from a 32×64×64 input.
// It is trained on synthetic chest-CT phantoms only (volume.NewPhantom),
// by the command given in README.md in this folder, and is not for
// clinical use. score.DefaultModel decodes it.
//
//go:embed default.safetensors
var Default []byte
