//go:build !purego

#include "textflag.h"

// func rescaleInt16SSE2(dst []float32, raw []byte, s, b float32)
TEXT ·rescaleInt16SSE2(SB), NOSPLIT, $0-56
	MOVQ  dst_base+0(FP), DI
	MOVQ  dst_len+8(FP), CX
	MOVQ  raw_base+24(FP), SI
	MOVSS s+48(FP), X6
	SHUFPS $0, X6, X6
	MOVSS b+52(FP), X7
	SHUFPS $0, X7, X7
	SHRQ  $3, CX
	JZ    idone

iloop:
	MOVOU     (SI), X0
	MOVO      X0, X1
	PUNPCKLWL X0, X0   // words 0-3 into the high halves of dwords
	PUNPCKHWL X1, X1   // words 4-7
	PSRAL     $16, X0  // arithmetic shift: sign-extended int32
	PSRAL     $16, X1
	CVTPL2PS  X0, X0
	CVTPL2PS  X1, X1
	MULPS     X6, X0
	MULPS     X6, X1
	ADDPS     X7, X0
	ADDPS     X7, X1
	MOVUPS    X0, (DI)
	MOVUPS    X1, 16(DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       iloop

idone:
	RET

// func rescaleUint16SSE2(dst []float32, raw []byte, s, b float32)
TEXT ·rescaleUint16SSE2(SB), NOSPLIT, $0-56
	MOVQ  dst_base+0(FP), DI
	MOVQ  dst_len+8(FP), CX
	MOVQ  raw_base+24(FP), SI
	MOVSS s+48(FP), X6
	SHUFPS $0, X6, X6
	MOVSS b+52(FP), X7
	SHUFPS $0, X7, X7
	PXOR  X5, X5
	SHRQ  $3, CX
	JZ    udone

uloop:
	MOVOU     (SI), X0
	MOVO      X0, X1
	PUNPCKLWL X5, X0   // words 0-3 zero-extended to dwords
	PUNPCKHWL X5, X1   // words 4-7
	CVTPL2PS  X0, X0
	CVTPL2PS  X1, X1
	MULPS     X6, X0
	MULPS     X6, X1
	ADDPS     X7, X0
	ADDPS     X7, X1
	MOVUPS    X0, (DI)
	MOVUPS    X1, 16(DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       uloop

udone:
	RET
