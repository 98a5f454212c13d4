import ComityCore
import Crypto
import Foundation
import Testing

/// A chain of entries built the way the database builds it, for verifier tests.
func auditChain(_ count: Int) -> [AuditEntry] {
    var head = AuditEntry.genesis
    return (1...count).map { index in
        var entry = AuditEntry(
            seq: Int64(index), atMicros: 1_790_000_000_000_000 + Int64(index), kind: index % 3 == 0 ? "placed" : "submitted", actor: "alice",
            jobId: Int64(index), hostId: index % 3 == 0 ? 7 : nil, partners: ["uon", "tum"], region: "ke-nbo-1", datasets: ["ke-health"],
            policy: "p0123456789abcdef", body: "{\"n\":\(index),\"note\":\"ünïcödé, commas\\nand newlines\"}")
        entry.rehash(after: &head)
        return entry
    }
}

extension AuditEntry {
    /// Recomputes this entry's hashes after `head`, and moves `head` on (what an operator rewriting history does).
    mutating func rehash(after head: inout [UInt8]) {
        let leafBytes = computedLeaf
        leaf = Hex.encode(leafBytes)
        head = AuditEntry.chain(previous: head, leaf: leafBytes)
        hash = Hex.encode(head)
    }
}

@Suite("Audit ledger: canonical encoding, chain, verification, checkpoints")
struct AuditLedgerTests {
    @Test("the canonical encoding is exactly the documented one")
    func canonicalEncoding() {
        let entry = AuditEntry(
            seq: 42, atMicros: 1_790_000_000_123_456, kind: "placed", actor: "scheduler", jobId: 9, hostId: nil, partners: ["uon", "tum"],
            region: "ke-nbo-1", datasets: [], policy: "p1", body: "{\"a\":\"é\"}")
        #expect(entry.canonical == """
            comity-audit-v1
            seq=42
            at_us=1790000000123456
            kind=6:placed
            actor=9:scheduler
            job=9
            host=
            partners=7:uon,tum
            region=8:ke-nbo-1
            datasets=0:
            policy=2:p1
            body=10:{"a":"é"}
            """)
        // leaf = SHA-256(0x00 || canonical); hash = SHA-256(0x01 || previous || leaf)
        #expect(entry.computedLeaf == Array(SHA256.hash(data: [0x00] + Array(entry.canonical.utf8))))
        let leaf = entry.computedLeaf
        #expect(AuditEntry.chain(previous: AuditEntry.genesis, leaf: leaf) == Array(SHA256.hash(data: [0x01] + AuditEntry.genesis + leaf)))
    }

    @Test("an intact chain verifies, page by page")
    func intactChain() {
        let chain = auditChain(500)
        var verifier = AuditVerifier()
        for entry in chain {
            let fed = verifier.feed(entry)
            #expect(fed)
        }
        let finished = verifier.finish()
        #expect(finished == nil)
        #expect(verifier.checked == 500)
        #expect(Hex.encode(verifier.head) == chain.last!.hash)
    }

    @Test("a modified field is found at its sequence number")
    func modified() {
        var chain = auditChain(50)
        chain[19].body = chain[19].body.replacingOccurrences(of: "\"n\":20", with: "\"n\":21")
        var verifier = AuditVerifier()
        for entry in chain where !verifier.feed(entry) { break }
        let finished = verifier.finish()
        #expect(finished?.kind == .modified)
        #expect(verifier.damage?.seq == 20)
        #expect(verifier.checked == 19)
    }

    @Test("a deleted entry is missing")
    func deleted() {
        var chain = auditChain(50)
        chain.remove(at: 30)
        var verifier = AuditVerifier()
        for entry in chain where !verifier.feed(entry) { break }
        let finished = verifier.finish()
        #expect(finished == AuditDamage(.missing, seq: 31, "entries 31…31 are gone (the next present is 32)"))
    }

    @Test("two entries swapped: reordered")
    func swapped() {
        var chain = auditChain(50)
        // The rows keep their sequence numbers; everything else changes places.
        var a = chain[11]
        var b = chain[12]
        swap(&a.seq, &b.seq)
        chain[11] = b
        chain[12] = a
        var verifier = AuditVerifier()
        for entry in chain where !verifier.feed(entry) { break }
        let finished = verifier.finish()
        #expect(finished?.kind == .reordered)
        #expect(verifier.damage?.seq == 12)
    }

    @Test("a tail rewritten with recomputed hashes passes alone, and is caught against a saved checkpoint")
    func rewrittenTail() {
        let original = auditChain(200)
        let checkpointRoots: [Int64: [UInt8]] = [100: Hex.decode(original[99].hash)!, 50: Hex.decode(original[49].hash)!]
        var forged = original
        var head = Hex.decode(forged[69].hash)!
        forged[70].body = "{\"n\":71,\"note\":\"nothing to see\"}"
        for index in 70..<forged.count { forged[index].rehash(after: &head) }

        var alone = AuditVerifier()
        for entry in forged {
            let fed = alone.feed(entry)
            #expect(fed)
        }
        let finished = alone.finish()
        #expect(finished == nil, "a consistent rewrite cannot be seen without a checkpoint")

        var held = AuditVerifier(checkpoints: checkpointRoots)
        for entry in forged where !held.feed(entry) { break }
        let damage = held.finish()
        #expect(damage?.kind == .rewritten)
        #expect(damage?.seq == 51, "the first entry after the last checkpoint that still matches")
    }

    @Test("a ledger shorter than a kept checkpoint lost its tail")
    func truncated() {
        let chain = auditChain(40)
        var verifier = AuditVerifier(checkpoints: [60: [UInt8](repeating: 1, count: 32)])
        for entry in chain { _ = verifier.feed(entry) }
        let finished = verifier.finish()
        #expect(finished?.kind == .missing)
        #expect(verifier.damage?.seq == 41)
    }

    @Test("redacted entries: the chain of hashes is still checked")
    func redacted() {
        var chain = auditChain(30)
        var verifier = AuditVerifier()
        for entry in chain {
            var hidden = AuditEntry(seq: entry.seq, atMicros: 0, kind: "")
            hidden.leaf = entry.leaf
            hidden.hash = entry.hash
            let fed = verifier.feed(hidden, redacted: true)
            #expect(fed)
        }
        let finished = verifier.finish()
        #expect(finished == nil)
        chain[9].hash = chain[10].hash
        var broken = AuditVerifier()
        for entry in chain where !broken.feed(AuditEntry(seq: entry.seq, atMicros: 0, kind: "", leaf: entry.leaf, hash: entry.hash), redacted: true) { break }
        #expect(broken.damage?.seq == 10)
    }

    @Test("checkpoints: signed notes verify with the key, and fail when altered or under another key")
    func checkpoints() throws {
        let key = Curve25519.Signing.PrivateKey()
        let root = Hex.decode(auditChain(10).last!.hash)!
        let checkpoint = try AuditCheckpoint.sign(origin: "comity.example/audit", size: 10, root: root, key: key)
        let lines = checkpoint.text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[0] == "comity.example/audit" && lines[1] == "10" && lines[2] == Substring(Data(root).base64EncodedString()) && lines[3] == "")
        #expect(lines[4].hasPrefix("— comity.example/audit "))

        let verifier = AuditCheckpoint.verifierKey(name: "comity.example/audit", publicKey: key.publicKey)
        let (name, publicKey) = try #require(AuditCheckpoint.parseVerifierKey(verifier))
        let opened = try AuditCheckpoint.open(checkpoint.text, key: publicKey, name: name)
        #expect(opened.size == 10 && opened.root == root)

        let altered = checkpoint.text.replacingOccurrences(of: "\n10\n", with: "\n11\n")
        #expect(throws: AuditCheckpointError.self) { try AuditCheckpoint.open(altered, key: publicKey, name: name) }
        let other = Curve25519.Signing.PrivateKey()
        #expect(throws: AuditCheckpointError.self) { try AuditCheckpoint.open(checkpoint.text, key: other.publicKey, name: name) }
        #expect(AuditCheckpoint.parseVerifierKey(verifier.replacingOccurrences(of: "comity.example", with: "evil.example")) == nil)
        // Base64 keys may contain '+', the separator: keys are split at the first two only.
        for _ in 0..<200 {
            let any = Curve25519.Signing.PrivateKey()
            #expect(AuditCheckpoint.parseVerifierKey(AuditCheckpoint.verifierKey(name: "n", publicKey: any.publicKey))?.key.rawRepresentation == any.publicKey.rawRepresentation)
        }
    }
}
