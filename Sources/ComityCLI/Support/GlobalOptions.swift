import ArgumentParser
import ComityClient
import Foundation

/// How results are printed.
enum OutputFormat: String, CaseIterable, ExpressibleByArgument {
    /// Aligned human tables and details.
    case table
    /// The API objects as pretty JSON with sorted keys.
    case json
}

/// The options every command takes: where the server is, who we are, how to print.
///
/// Flags win over the environment (`COMITY_SERVER`, `COMITY_TOKEN`, `COMITY_TOKEN_FILE`), which wins over defaults.
struct GlobalOptions: ParsableArguments {
    static let defaultServer = "http://127.0.0.1:8700"

    @Option(help: ArgumentHelp("Server URL (env COMITY_SERVER; default \(defaultServer)).", valueName: "url"))
    var server: String?

    @Option(help: ArgumentHelp("API token (env COMITY_TOKEN).", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("Read the API token from a file (env COMITY_TOKEN_FILE).", valueName: "path"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("Output format: table or json.", valueName: "format"))
    var output: OutputFormat = .table

    var isJSON: Bool { output == .json }

    /// The server URL from the flag, the environment or the default.
    var serverURL: String {
        server ?? Self.environment("COMITY_SERVER") ?? Self.defaultServer
    }

    func validate() throws {
        let url = serverURL
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", components.host?.isEmpty == false
        else {
            throw ValidationError("--server: expected a URL such as \(Self.defaultServer), got \"\(url)\"")
        }
        if token != nil, tokenFile != nil {
            throw ValidationError("--token and --token-file are alternatives; give one")
        }
    }

    /// The bearer token from `--token`, `--token-file`, `COMITY_TOKEN` or `COMITY_TOKEN_FILE`, in that order.
    ///
    /// - Throws: ``CommandFailure`` when a token file cannot be read or is empty.
    func resolvedToken() throws -> String? {
        if let token { return token }
        if let tokenFile { return try Self.readToken(tokenFile) }
        if let token = Self.environment("COMITY_TOKEN") { return token }
        if let path = Self.environment("COMITY_TOKEN_FILE") { return try Self.readToken(path) }
        return nil
    }

    /// A client for the chosen server and token.
    func client() throws -> ComityClient {
        ComityClient(server: serverURL, token: try resolvedToken())
    }

    private static func environment(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name]?.trimmingCharacters(in: .whitespacesAndNewlines),
            !value.isEmpty
        else { return nil }
        return value
    }

    private static func readToken(_ path: String) throws -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CommandFailure(message: "cannot read token file \(path): \(error.localizedDescription)")
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw CommandFailure(message: "token file \(path) is empty") }
        return token
    }
}
