import ArgumentParser
import ComityCore
import Foundation

/// `comity-bench audit-verify`: how long verification of the audit ledger takes, per million entries. Builds a chain
/// of entries shaped like real ones (a placement's body, partners, datasets) and times `AuditVerifier` over it, as
/// `comity audit verify` runs it on the pages it fetches.
struct AuditVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit-verify", abstract: "Time to verify N audit ledger entries (recomputing every leaf and chain hash).")

    @Option(help: "Entries.") var entries: Int = 1_000_000
    @Option(help: "Write the JSON object here.") var out: String?

    func run() async throws {
        var head = AuditEntry.genesis
        var chain: [AuditEntry] = []
        chain.reserveCapacity(entries)
        for index in 1...entries {
            var entry = AuditEntry(
                seq: Int64(index), atMicros: 1_795_000_000_000_000 + Int64(index) * 1_000, kind: "placed", actor: "scheduler",
                jobId: Int64(index), hostId: Int64(index % 1000), partners: ["tum", "uon"], region: "eu-de-1", datasets: ["ke-health"],
                policy: "p0123456789abcdef",
                body: #"{"attempt":\#(index),"class":"guest","gpus":"{0,1}","permitted":["DE","EU"],"try":1}"#)
            let leaf = entry.computedLeaf
            head = AuditEntry.chain(previous: head, leaf: leaf)
            entry.leaf = Hex.encode(leaf)
            entry.hash = Hex.encode(head)
            chain.append(entry)
        }
        let clock = ContinuousClock()
        var verifier = AuditVerifier(checkpoints: [Int64(entries / 2): Hex.decode(chain[entries / 2 - 1].hash)!])
        let elapsed = clock.measure {
            for entry in chain where !verifier.feed(entry) { break }
            _ = verifier.finish()
        }
        guard verifier.damage == nil, verifier.checked == Int64(entries) else { throw BenchError("verification failed: \(String(describing: verifier.damage))") }
        let seconds = elapsed.seconds
        say("audit-verify: \(entries) entries in \(String(format: "%.2f", seconds)) s (\(Int(Double(entries) / seconds)) entries/s)")
        let result: JSONValue = .object([
            "audit_verify_entries": .number(Double(entries)), "audit_verify_seconds": .number((seconds * 1000).rounded() / 1000),
            "audit_verify_s_per_million": .number((seconds / Double(entries) * 1e6 * 1000).rounded() / 1000),
        ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(result)
        if let out { try data.write(to: URL(fileURLWithPath: out)) } else { print(String(decoding: data, as: UTF8.self)) }
    }
}
