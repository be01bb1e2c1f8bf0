package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Summary is what a run did.
type Summary struct {
	Planned   int // links in the inventory
	Already   int // links already issued (provision) or not due (rotate)
	Issued    int // generations issued by this run
	Completed int // generations issued by an earlier, interrupted run whose bundles this run renamed into place
	Discarded int // bundles of an interrupted run that were never recorded, removed
}

// batchSize bounds how many generations one registry transaction records.
const batchSize = 256

// Run issues a generation for every link of the inventory that needs one:
// with rotateWithin 0, every link not yet issued; otherwise every issued
// link whose newest generation expires within rotateWithin (a link never
// issued is left to a provisioning run). It is idempotent and resumable:
// bundles are written under temporary names, the registry records them a
// batch at a time, and only then are they renamed; a rerun after a crash
// renames what was recorded and discards what was not, so each generation
// of a link is issued exactly once. progress, when set, sees (done, total).
func Run(inv *Inventory, reg Registry, out string, pol Policy, rotateWithin time.Duration, progress func(done, total int)) (Summary, error) {
	var sum Summary
	sum.Planned = len(inv.Links)
	latest, err := reg.Latest()
	if err != nil {
		return sum, err
	}
	// Finish or discard what an interrupted run left.
	expected := map[string]*Issue{}
	for _, is := range latest {
		for _, nid := range []string{is.Client, is.Server} {
			expected[filepath.Join(out, nid, is.fileName()+".tmp")] = is
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(out, "*", "*.bundle.tmp"))
	finished := map[*Issue]bool{}
	for _, p := range tmps {
		if is := expected[p]; is != nil {
			if !finished[is] {
				if err := finish(out, is); err != nil {
					return sum, err
				}
				finished[is] = true
				sum.Completed++
			}
			continue
		}
		if err := os.Remove(p); err != nil {
			return sum, err
		}
		sum.Discarded++
	}
	now := time.Now()
	var todo []Link
	for _, l := range inv.Links {
		prev := latest[l.Name()]
		switch {
		case rotateWithin == 0 && prev == nil, rotateWithin > 0 && prev != nil && prev.NotAfter.Before(now.Add(rotateWithin)):
			todo = append(todo, l)
		default:
			sum.Already++
		}
	}
	if progress != nil {
		progress(0, len(todo))
	}
	jobs := make(chan Link)
	results := make(chan *Issue)
	var werr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range jobs {
				is, err := issue(out, inv, l, latest[l.Name()], pol, now)
				if err != nil {
					mu.Lock()
					werr = errors.Join(werr, err)
					mu.Unlock()
					continue
				}
				results <- is
			}
		}()
	}
	go func() {
		for _, l := range todo {
			mu.Lock()
			failed := werr != nil
			mu.Unlock()
			if failed {
				break
			}
			jobs <- l
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	var batch []*Issue
	var cerr error
	flush := func() {
		if len(batch) == 0 || cerr != nil {
			return
		}
		if cerr = reg.Record(batch); cerr != nil {
			return
		}
		for _, is := range batch {
			if cerr = finish(out, is); cerr != nil {
				return
			}
		}
		sum.Issued += len(batch)
		if progress != nil {
			progress(sum.Issued, len(todo))
		}
		batch = batch[:0]
	}
	for is := range results {
		batch = append(batch, is)
		if len(batch) >= batchSize {
			flush()
		}
	}
	flush()
	return sum, errors.Join(werr, cerr)
}

// Status is one planned link against the registry.
type Status struct {
	Link  Link
	Issue *Issue // nil: not issued
}

// Plan lists every planned link with its newest issued generation, and the
// registry's links that are no longer planned.
func Plan(inv *Inventory, reg Registry) (planned []Status, unplanned []*Issue, err error) {
	latest, err := reg.Latest()
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, l := range inv.Links {
		planned = append(planned, Status{Link: l, Issue: latest[l.Name()]})
		seen[l.Name()] = true
	}
	for name, is := range latest {
		if !seen[name] && !strings.HasPrefix(name, "#") {
			unplanned = append(unplanned, is)
		}
	}
	return planned, unplanned, nil
}
