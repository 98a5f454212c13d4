import Crypto
import Foundation

/// One entry of the audit ledger. Its content is everything but the hashes; `leaf` and `hash` chain it to the entry
/// before (see `docs/audit.md`):
///
///     leaf = SHA-256(0x00 || UTF-8(canonical))
///     hash = SHA-256(0x01 || previous hash || leaf)      previous hash of entry 1: 32 zero bytes
public struct AuditEntry: Sendable, Hashable, Codable {
    public var seq: Int64
    /// Microseconds since the Unix epoch (the hashed form of the time).
    public var atMicros: Int64
    public var kind: String
    public var actor: String
    public var jobId: Int64?
    public var hostId: Int64?
    public var partners: [String]
    public var region: String
    public var datasets: [String]
    /// The rules in force (ActivePolicies id) when the decision was made.
    public var policy: String
    /// JSON text, hashed exactly as stored.
    public var body: String
    /// Hex of the leaf hash.
    public var leaf: String
    /// Hex of the chain hash.
    public var hash: String

    public init(
        seq: Int64, atMicros: Int64, kind: String, actor: String = "", jobId: Int64? = nil, hostId: Int64? = nil, partners: [String] = [],
        region: String = "", datasets: [String] = [], policy: String = "", body: String = "{}", leaf: String = "", hash: String = ""
    ) {
        self.seq = seq
        self.atMicros = atMicros
        self.kind = kind
        self.actor = actor
        self.jobId = jobId
        self.hostId = hostId
        self.partners = partners
        self.region = region
        self.datasets = datasets
        self.policy = policy
        self.body = body
        self.leaf = leaf
        self.hash = hash
    }

    public var at: Date { Date(timeIntervalSince1970: Double(atMicros) / 1_000_000) }

    /// The canonical encoding: a version line, then one `name=value` line per field, text fields as
    /// `<UTF-8 byte length>:<text>` (so no separator inside a value can be confused with the next field), lists
    /// joined with commas, absent numbers empty. The SQL function `audit_canonical` (migrations/0003_audit.sql)
    /// produces the same bytes.
    public var canonical: String {
        func text(_ value: String) -> String { "\(value.utf8.count):\(value)" }
        return [
            "comity-audit-v1",
            "seq=\(seq)",
            "at_us=\(atMicros)",
            "kind=" + text(kind),
            "actor=" + text(actor),
            "job=" + (jobId.map(String.init) ?? ""),
            "host=" + (hostId.map(String.init) ?? ""),
            "partners=" + text(partners.joined(separator: ",")),
            "region=" + text(region),
            "datasets=" + text(datasets.joined(separator: ",")),
            "policy=" + text(policy),
            "body=" + text(body),
        ].joined(separator: "\n")
    }

    /// SHA-256(0x00 || canonical).
    public var computedLeaf: [UInt8] {
        var hasher = SHA256()
        hasher.update(data: [0x00])
        hasher.update(data: Array(canonical.utf8))
        return Array(hasher.finalize())
    }

    /// SHA-256(0x01 || previous || leaf).
    public static func chain(previous: [UInt8], leaf: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: [0x01])
        hasher.update(data: previous)
        hasher.update(data: leaf)
        return Array(hasher.finalize())
    }

    public static let genesis = [UInt8](repeating: 0, count: 32)
}

/// Hex encoding of hashes.
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}
