package backing

import (
	"slices"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// maxRiskRanges bounds the ranges listed per file in AtRisk.
const maxRiskRanges = 32

// AtRisk lists the files with unsynced writes, oldest first, at most
// limit of them (all if limit <= 0). Blobs closed dirty are listed by the
// name they had when closed. What the store forgot (past its bound on
// closed blobs) is not listed; Unsynced still counts it.
func (s *Store) AtRisk(limit int) []wire.RiskFile {
	s.mu.Lock()
	var files []wire.RiskFile
	for _, b := range s.blobs {
		b.dmu.Lock()
		if !b.dirty.empty() || b.metaDirty {
			files = append(files, riskOf(b.name, true, &b.dirty, b.dirtySince, b.metaDirty))
		}
		b.dmu.Unlock()
	}
	for _, cd := range s.closed {
		if !cd.pages.empty() || cd.meta {
			files = append(files, riskOf(cd.name, false, &cd.pages, cd.since, cd.meta))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(files, func(a, b wire.RiskFile) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	if limit > 0 && len(files) > limit {
		files = files[:limit]
	}
	return files
}

func riskOf(name string, open bool, pages *pageSet, since time.Time, meta bool) wire.RiskFile {
	f := wire.RiskFile{Name: name, Open: open, Bytes: pages.count * int64(pageSize), Since: since, Size: meta}
	pages.runs(func(first, end int64) bool {
		if len(f.Ranges) == maxRiskRanges {
			f.More++
			return true
		}
		f.Ranges = append(f.Ranges, wire.RiskRange{Off: first * int64(pageSize), Len: (end - first) * int64(pageSize)})
		return true
	})
	return f
}
