package querier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// ExemplarQuerier implements storage.ExemplarQueryable. Exemplars live only in ingesters.
func (q *Querier) ExemplarQuerier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return &exemplarQuerier{ctx: ctx, q: q}, nil
}

type exemplarQuerier struct {
	ctx context.Context
	q   *Querier
}

// Select implements storage.ExemplarQuerier: one result per series, exemplars de-duplicated
// across replicas and sorted by time.
func (e *exemplarQuerier) Select(start, end int64, matchers ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	req := &exemplarspb.ExemplarsRequest{
		Query: joinSelectors(matchers), Start: start, End: end,
		PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
	}
	addrs, maxErrs, err := e.q.ingesters.Addresses(e.ctx)
	if err != nil {
		return nil, fmt.Errorf("exemplars: %w", err)
	}
	type key struct {
		ts    int64
		value float64
		lbls  string
	}
	var (
		mtx    sync.Mutex
		series = map[string]*exemplar.QueryResult{}
		seen   = map[string]map[key]struct{}{}
	)
	err = e.q.callAll(e.ctx, addrs, maxErrs, func(ctx context.Context, c Client) error {
		stream, err := c.Exemplars(ctx, req)
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			data := resp.GetData()
			if data == nil {
				continue
			}
			lset := client.PromLabelsFromZLabels(data.SeriesLabels.Labels)
			id := lset.String()
			mtx.Lock()
			res, ok := series[id]
			if !ok {
				res = &exemplar.QueryResult{SeriesLabels: lset}
				series[id] = res
				seen[id] = map[key]struct{}{}
			}
			for _, ex := range data.Exemplars {
				el := client.PromLabelsFromZLabels(ex.Labels.Labels)
				k := key{ts: ex.Ts, value: ex.Value, lbls: el.String()}
				if _, dup := seen[id][k]; dup {
					continue
				}
				seen[id][k] = struct{}{}
				res.Exemplars = append(res.Exemplars, exemplar.Exemplar{Labels: el, Value: ex.Value, Ts: ex.Ts, HasTs: true})
			}
			mtx.Unlock()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("exemplars: %w", err)
	}
	out := make([]exemplar.QueryResult, 0, len(series))
	for _, r := range series {
		slices.SortFunc(r.Exemplars, func(a, b exemplar.Exemplar) int { return cmp.Compare(a.Ts, b.Ts) })
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out, nil
}

// MetricMetadata returns per-metric metadata from the ingesters, de-duplicated. limit bounds
// the number of metrics and limitPerMetric the entries per metric (<=0: unlimited).
func (q *Querier) MetricMetadata(ctx context.Context, metric string, limit, limitPerMetric int) (map[string][]metadatapb.Meta, error) {
	addrs, maxErrs, err := q.ingesters.Addresses(ctx)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	req := &metadatapb.MetricMetadataRequest{Metric: metric, Limit: -1, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT}
	var (
		mtx sync.Mutex
		all = map[string][]metadatapb.Meta{}
	)
	err = q.callAll(ctx, addrs, maxErrs, func(ctx context.Context, c Client) error {
		stream, err := c.MetricMetadata(ctx, req)
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			md := resp.GetMetadata()
			if md == nil {
				continue
			}
			mtx.Lock()
			for name, entry := range md.Metadata {
				for _, m := range entry.Metas {
					if !slices.Contains(all[name], m) {
						all[name] = append(all[name], m)
					}
				}
			}
			mtx.Unlock()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make(map[string][]metadatapb.Meta, len(all))
	for _, n := range names {
		if limit > 0 && len(out) >= limit {
			break
		}
		metas := all[n]
		if limitPerMetric > 0 && len(metas) > limitPerMetric {
			metas = metas[:limitPerMetric]
		}
		out[n] = metas
	}
	return out, nil
}

// callAll calls fn on every address concurrently, tolerating maxErrs failures. Backends
// that do not implement the service (store-gateways for exemplars) count as empty.
func (q *Querier) callAll(ctx context.Context, addrs []string, maxErrs int, fn func(context.Context, Client) error) error {
	var (
		wg   sync.WaitGroup
		mtx  sync.Mutex
		errs []error
	)
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := q.pool.get(addr)
			if err == nil {
				err = fn(ctx, c)
			}
			if err != nil && status.Code(err) != codes.Unimplemented {
				mtx.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				mtx.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > maxErrs {
		return errors.Join(errs...)
	}
	return nil
}
