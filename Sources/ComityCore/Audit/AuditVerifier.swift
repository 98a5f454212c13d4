import Foundation

/// What verification found wrong, at the first bad sequence number.
public struct AuditDamage: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable, Codable {
        /// An entry's content (or a hash) no longer matches what was recorded.
        case modified
        /// An entry is gone (a gap in the sequence, or the ledger is shorter than a signed checkpoint).
        case missing
        /// An intact entry sits at another entry's place.
        case reordered
        /// The chain is consistent but no longer hashes to a signed checkpoint: entries were rewritten and rehashed.
        case rewritten
    }

    public var kind: Kind
    /// The first sequence number that is (or, for `rewritten`, may be) bad.
    public var seq: Int64
    public var detail: String

    public init(_ kind: Kind, seq: Int64, _ detail: String) {
        self.kind = kind
        self.seq = seq
        self.detail = detail
    }

    public var description: String { "\(kind.rawValue) at seq \(seq): \(detail)" }
}

/// Recomputes the ledger's chain entry by entry (in pages, as they arrive) and compares it with saved checkpoints.
/// Stops at the first damage.
public struct AuditVerifier: Sendable {
    /// Checkpoint roots to compare with, by size (the chain hash of entry `size`).
    let checkpoints: [Int64: [UInt8]]
    public private(set) var checked: Int64 = 0
    public private(set) var head: [UInt8] = AuditEntry.genesis
    public private(set) var damage: AuditDamage?
    /// The largest checkpoint size confirmed so far.
    var confirmed: Int64 = 0

    /// - Parameter checkpoints: size → root hash of checkpoints to hold the ledger to (already signature-checked).
    public init(checkpoints: [Int64: [UInt8]] = [:]) {
        self.checkpoints = checkpoints
    }

    /// Checks the next entry. Entries carry their content, or only their hashes (`redacted`: entries the caller may
    /// not read, whose leaf is taken as given and only the chain is checked).
    ///
    /// - Returns: `false` once damage is found.
    public mutating func feed(_ entry: AuditEntry, redacted: Bool = false) -> Bool {
        guard damage == nil else { return false }
        let expected = checked + 1
        if entry.seq > expected {
            return fail(.missing, expected, "entries \(expected)…\(entry.seq - 1) are gone (the next present is \(entry.seq))")
        }
        if entry.seq < expected {
            return fail(.reordered, entry.seq, "seq \(entry.seq) appears again after \(checked)")
        }
        guard let storedLeaf = Hex.decode(entry.leaf), storedLeaf.count == 32, let storedHash = Hex.decode(entry.hash), storedHash.count == 32 else {
            return fail(.modified, entry.seq, "its hashes are not 32-byte hex")
        }
        if !redacted {
            let leaf = entry.computedLeaf
            if leaf != storedLeaf {
                // Content intact but recorded for another place: an entry moved.
                for other in max(1, entry.seq - 64)...(entry.seq + 64) where other != entry.seq {
                    var moved = entry
                    moved.seq = other
                    if moved.computedLeaf == storedLeaf {
                        return fail(.reordered, entry.seq, "holds the entry recorded as seq \(other)")
                    }
                }
                return fail(.modified, entry.seq, "its content no longer matches its recorded leaf hash")
            }
        }
        let hash = AuditEntry.chain(previous: head, leaf: storedLeaf)
        if hash != storedHash {
            return fail(.modified, entry.seq, "its chain hash does not follow from the entries before it")
        }
        head = hash
        checked = entry.seq
        if let root = checkpoints[entry.seq] {
            if root != hash {
                let from = confirmed + 1
                return fail(
                    .rewritten, from,
                    "the chain no longer hashes to the checkpoint of size \(entry.seq): entries \(from)…\(entry.seq) were rewritten and rehashed")
            }
            confirmed = entry.seq
        }
        return true
    }

    /// Call after the last entry: checkpoints larger than the ledger mean entries were cut off.
    public mutating func finish() -> AuditDamage? {
        if damage == nil, let beyond = checkpoints.keys.filter({ $0 > checked }).min() {
            _ = fail(.missing, checked + 1, "a checkpoint covers \(beyond) entries but the ledger ends at \(checked)")
        }
        if damage == nil, checkpoints[0].map({ $0 != AuditEntry.genesis }) == true {
            _ = fail(.rewritten, 1, "the empty checkpoint has a root other than the genesis hash")
        }
        return damage
    }

    private mutating func fail(_ kind: AuditDamage.Kind, _ seq: Int64, _ detail: String) -> Bool {
        damage = AuditDamage(kind, seq: seq, detail)
        return false
    }
}
