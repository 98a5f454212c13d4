import Crypto
import Foundation

/// A signed statement of the ledger head, in the C2SP tlog-checkpoint format (a signed note):
///
///     <origin>\n<size>\n<base64 root>\n\n— <key name> <base64(key id || Ed25519 signature)>\n
///
/// The signature covers the three body lines with their newlines. The key id is the first 4 bytes of
/// SHA-256(key name || "\n" || 0x01 || public key), and the verifier key is published as
/// `<key name>+<key id hex>+<base64(0x01 || public key)>`. The root of a checkpoint of size N is the chain hash of
/// entry N (the genesis hash, 32 zero bytes, for N = 0).
public struct AuditCheckpoint: Sendable, Hashable {
    public var origin: String
    public var size: Int64
    public var root: [UInt8]
    /// The whole signed note.
    public var text: String

    public var body: String { "\(origin)\n\(size)\n\(Data(root).base64EncodedString())\n" }

    /// Signs a checkpoint with the ledger's key (the key name is the origin).
    public static func sign(origin: String, size: Int64, root: [UInt8], key: Curve25519.Signing.PrivateKey) throws -> AuditCheckpoint {
        let body = "\(origin)\n\(size)\n\(Data(root).base64EncodedString())\n"
        let signature = try key.signature(for: Data(body.utf8))
        let keyID = keyID(name: origin, publicKey: key.publicKey)
        let line = "— \(origin) \(Data(keyID + Array(signature)).base64EncodedString())\n"
        return AuditCheckpoint(origin: origin, size: size, root: root, text: body + "\n" + line)
    }

    public static func keyID(name: String, publicKey: Curve25519.Signing.PublicKey) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: Array((name + "\n").utf8) + [0x01] + Array(publicKey.rawRepresentation))
        return Array(hasher.finalize().prefix(4))
    }

    /// The verifier key in note format.
    public static func verifierKey(name: String, publicKey: Curve25519.Signing.PublicKey) -> String {
        "\(name)+\(Hex.encode(keyID(name: name, publicKey: publicKey)))+\(Data([0x01] + Array(publicKey.rawRepresentation)).base64EncodedString())"
    }

    /// Parses a verifier key; `nil` when malformed.
    public static func parseVerifierKey(_ text: String) -> (name: String, key: Curve25519.Signing.PublicKey)? {
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let raw = Data(base64Encoded: parts[2]), raw.first == 0x01,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw.dropFirst())
        else { return nil }
        guard Hex.encode(keyID(name: parts[0], publicKey: key)) == parts[1] else { return nil }
        return (parts[0], key)
    }

    /// Parses a signed checkpoint and checks its signature with `key`.
    ///
    /// - Throws: ``AuditCheckpointError`` naming what is wrong.
    public static func open(_ text: String, key: Curve25519.Signing.PublicKey, name: String) throws -> AuditCheckpoint {
        guard let split = text.range(of: "\n\n") else { throw AuditCheckpointError("no blank line between the body and the signature") }
        let body = String(text[..<split.lowerBound]) + "\n"
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        guard lines.count >= 3, let size = Int64(lines[1]), size >= 0, let rootData = Data(base64Encoded: lines[2]), rootData.count == 32 else {
            throw AuditCheckpointError("the body is not origin, size, base64 root")
        }
        let signatures = text[split.upperBound...].split(separator: "\n").map(String.init)
        let expectedID = keyID(name: name, publicKey: key)
        for line in signatures where line.hasPrefix("— \(name) ") {
            guard let blob = Data(base64Encoded: String(line.dropFirst("— \(name) ".count))), blob.count == 68,
                Array(blob.prefix(4)) == expectedID
            else { continue }
            if key.isValidSignature(blob.dropFirst(4), for: Data(body.utf8)) {
                return AuditCheckpoint(origin: lines[0], size: size, root: Array(rootData), text: text)
            }
            throw AuditCheckpointError("the signature of \(name) does not verify: the checkpoint was altered or signed by another key")
        }
        throw AuditCheckpointError("no signature by \(name)")
    }
}

public struct AuditCheckpointError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
