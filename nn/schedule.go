package nn

import "math"

// Schedule gives the learning rate for a 0-based optimizer step:
// opt.SetLR(sched(step)); opt.Step().
type Schedule func(step int) float64

// ConstantLR returns the schedule lr(s) = lr.
func ConstantLR(lr float64) Schedule { return func(int) float64 { return lr } }

// StepLR returns lr(s) = lr·gamma^⌊s/every⌋ (torch.optim.lr_scheduler.StepLR
// with step_size every, stepped once per step s). every < 1 is taken as 1.
func StepLR(lr, gamma float64, every int) Schedule {
	every = max(every, 1)
	return func(s int) float64 { return lr * math.Pow(gamma, float64(max(s, 0)/every)) }
}

// WarmupCosineLR returns a linear warmup followed by a cosine decay, per
// step s:
//
//	s < warmup:          lr·(s + 1)/warmup
//	warmup ≤ s < total:  minLR + (lr − minLR)·(1 + cos(π·(s − warmup)/(total − warmup)))/2
//	s ≥ total:           minLR
//
// so the first step uses lr/warmup, step warmup uses lr, and the rate reaches
// minLR at step total. warmup 0 means no warmup (torch's
// CosineAnnealingLR with T_max = total and eta_min = minLR).
func WarmupCosineLR(lr, minLR float64, warmup, total int) Schedule {
	warmup = max(warmup, 0)
	return func(s int) float64 {
		s = max(s, 0)
		switch {
		case s < warmup:
			return lr * float64(s+1) / float64(warmup)
		case s >= total:
			return minLR
		}
		frac := float64(s-warmup) / float64(total-warmup)
		return minLR + (lr-minLR)*(1+math.Cos(math.Pi*frac))/2
	}
}
