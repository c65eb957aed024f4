// Package ingester holds recent metrics: one Prometheus TSDB (head + WAL) per tenant,
// cut into blocks on Vigil's schedule, shipped to object storage, and served to
// queriers over the Thanos Store API.
//
// # Layout
//
// Tenant data lives in <data-dir>/tsdb/<tenant>/ (a plain Prometheus TSDB directory:
// wal/, wbl/, chunks_head/, block dirs) plus vigil.shipped.json (blocks already
// uploaded) and vigil.metadata.json (latest metric metadata per family). A tenant's
// TSDB is created on its first write and reopened, with WAL replay, when the ingester
// starts. Blocks are uploaded to <tenant>/<ULID>/ in the bucket: chunks, then index,
// then meta.json with a Thanos section (version 1, labels {tenant_id: <tenant>},
// source "receive", resolution 0, file list with sizes, index_stats).
//
// # Durability (fsync policy)
//
// Push returns only after the TSDB appender's Commit returned, and Commit writes the
// batch's WAL records with write(2) before it makes the samples visible. So an
// acknowledged write is in the kernel's page cache and survives a crash or kill -9 of
// the process (TestKill9KeepsAcknowledgedWrites checks exactly this). Prometheus fsyncs
// a WAL segment when it is completed (every -ingester.wal-segment-size bytes); a power
// loss or kernel crash can therefore lose acknowledged writes of the current segment.
// With -ingester.wal-fsync-on-push the ingester also fsyncs the newest WAL and
// out-of-order WBL segments before acknowledging, which closes that gap at the cost of
// one fsync per push. Replication (RF 3) is the usual answer to losing a machine.
//
// Metric metadata lives in vigil.metadata.json, not in the WAL. A push that changes it
// (a new family, a new type, HELP or unit) returns only after the whole file has been
// rewritten, fsynced, renamed into place and the directory fsynced, independent of
// -ingester.wal-fsync-on-push: changes are rare, so this costs nothing in the steady
// state, where pushes with unchanged metadata do not touch the disk. Pushes changing
// metadata at the same time share writes (group commit); other pushes never wait.
//
// # Head compaction, shipping, retention
//
// Prometheus' own compaction is disabled. Every -ingester.compaction-interval the
// ingester cuts the head's oldest -ingester.block-range (2h, aligned like Prometheus)
// once the head spans 1.5 ranges, cuts the whole head when the tenant was idle for
// -ingester.head-compaction-idle-timeout, and ships new blocks. FlushAll (and
// POST /ingester/flush) cuts and ships everything now. A local block is deleted only
// after it was shipped and its max time is older than -ingester.retention-period; a
// tenant with no writes for -ingester.tsdb-close-idle-after, an empty head and no
// local blocks is closed and its directory removed. Like Prometheus, cutting the head
// waits for open head queries overlapping the cut range, and a forced cut holds off the
// tenant's pushes meanwhile (appends into the range being cut would otherwise be lost),
// so queriers must bound their Series streams with a deadline.
//
// # Limits
//
// Series limits (per tenant, per metric name) are checked when a series is created,
// through tsdb.SeriesLifecycleCallback, and only after WAL replay: appends to existing
// series are never refused and a restart never drops accepted series. The out-of-order
// window is read from Limits at open and re-applied every compaction interval.
//
// # Wiring
//
//	ing, err := ingester.New(cfg, overrides, bkt, ringKV, logger, reg)
//	ing.RegisterGRPC(grpcServer) // vigil.ingester.Ingester, thanos.Store/Exemplars/Metadata/info.Info
//	ing.RegisterHTTP(router)     // POST /ingester/flush, GET /ingester/ring
//	// run ing as a dskit service
//
// The gRPC server needs dskit's ServerUserHeaderInterceptor and
// StreamServerUserHeaderInterceptor (tenant from metadata) and should use
// client.ServerOptions() (gogo-aware codec).
package ingester
