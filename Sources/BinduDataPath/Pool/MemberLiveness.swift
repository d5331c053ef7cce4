/// When a registered replica was last seen alive, and by which signal: its heartbeats, or its
/// health probes passing.
///
/// The shipped SDKs differ: the TypeScript SDK heartbeats, the Kotlin SDK never does, and both
/// answer `HealthCheck`. So a member stays while either signal is fresh, and is evicted after
/// `registry.replica_timeout` with neither. With a shared registry, what the other meshes saw
/// counts too (``seenElsewhere(at:)``): a member is evicted only when no mesh has seen it. A value
/// type, mutated under the pool's lock, with the clock passed in.
package struct MemberLiveness: Sendable, Hashable {
  /// The signal that last showed the member alive.
  package enum Signal: String, Sendable, Hashable {
    /// It registered (or was restored after a mesh restart) and has shown nothing since.
    case joined
    /// A heartbeat.
    case heartbeat
    /// A passing health probe.
    case probe
    /// Another mesh of a shared registry saw a heartbeat or a passing probe.
    case elsewhere
  }

  /// What ``check(now:timeout:)`` found.
  package enum Verdict: Sendable, Hashable {
    /// Alive; nothing to say.
    case alive
    /// Alive by its probes alone for the first time: no heartbeat within the timeout. Said once,
    /// until a heartbeat comes.
    case keptByProbes
    /// Neither signal within the timeout: evict it.
    case evict
  }

  /// When the member joined.
  package private(set) var joined: ContinuousClock.Instant
  private var lastHeartbeat: ContinuousClock.Instant?
  private var lastProbePass: ContinuousClock.Instant?
  private var lastSeenElsewhere: ContinuousClock.Instant?
  private var saidKeptByProbes = false

  /// A member that joined at `now`.
  package init(joinedAt now: ContinuousClock.Instant) { joined = now }

  /// Records a heartbeat.
  package mutating func heartbeat(at now: ContinuousClock.Instant) {
    lastHeartbeat = now
    saidKeptByProbes = false
  }

  /// Records a passing health probe.
  package mutating func probePassed(at now: ContinuousClock.Instant) { lastProbePass = now }

  /// Records that another mesh saw the member alive at `instant` (the shared registry's
  /// newest sighting, turned into this mesh's clock); an older one than known changes nothing.
  package mutating func seenElsewhere(at instant: ContinuousClock.Instant) {
    if lastSeenElsewhere.map({ instant > $0 }) ?? true { lastSeenElsewhere = instant }
  }

  /// When this mesh itself last saw the member alive (a heartbeat or a passing probe here);
  /// `nil` when it has not. Sightings from elsewhere are left out, so that a mesh never passes
  /// on what it only heard.
  package var seenHere: ContinuousClock.Instant? {
    switch (lastHeartbeat, lastProbePass) {
    case (nil, nil): nil
    case (.some(let beat), nil): beat
    case (nil, .some(let probe)): probe
    case (.some(let beat), .some(let probe)): max(beat, probe)
    }
  }

  /// The signal seen last (a heartbeat when both came at once; this mesh's own before another's).
  package var signal: Signal {
    if let elsewhere = lastSeenElsewhere, seenHere.map({ elsewhere > $0 }) ?? true { return .elsewhere }
    return switch (lastHeartbeat, lastProbePass) {
    case (nil, nil): .joined
    case (.some, nil): .heartbeat
    case (nil, .some): .probe
    case (.some(let beat), .some(let probe)): probe > beat ? .probe : .heartbeat
    }
  }

  /// Whether the member is still alive at `now`.
  package mutating func check(now: ContinuousClock.Instant, timeout: Duration) -> Verdict {
    let beat = lastHeartbeat ?? joined
    if now - beat <= timeout { return .alive }
    if let elsewhere = lastSeenElsewhere, now - elsewhere <= timeout { return .alive }
    guard let probe = lastProbePass, now - probe <= timeout else { return .evict }
    if saidKeptByProbes { return .alive }
    saidKeptByProbes = true
    return .keptByProbes
  }
}
