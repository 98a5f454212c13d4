import Foundation

/// Splits an SQL script into statements at top-level semicolons.
///
/// PostgreSQL's extended protocol (which PostgresNIO speaks) takes one statement per query, so a migration file is
/// run statement by statement inside its transaction. Quotes (`'…'`, `"…"`), dollar quotes (`$$…$$`, `$tag$…$tag$`)
/// and comments (`-- …`, `/* … */`) are respected.
package enum SQLScript {
    package static func statements(_ script: String) -> [String] {
        let characters = Array(script.unicodeScalars)
        var statements: [String] = []
        var current = String.UnicodeScalarView()
        var index = 0
        func flush() {
            let text = String(current).trimmingSpacesAndComments
            if !text.isEmpty { statements.append(text) }
            current = String.UnicodeScalarView()
        }
        while index < characters.count {
            let c = characters[index]
            let next = index + 1 < characters.count ? characters[index + 1] : nil
            switch c {
            case "-" where next == "-":
                while index < characters.count, characters[index] != "\n" {
                    current.append(characters[index])
                    index += 1
                }
                continue
            case "/" where next == "*":
                var depth = 0
                repeat {
                    if characters[index] == "/", index + 1 < characters.count, characters[index + 1] == "*" {
                        depth += 1
                        current.append(contentsOf: [characters[index], characters[index + 1]])
                        index += 2
                    } else if characters[index] == "*", index + 1 < characters.count, characters[index + 1] == "/" {
                        depth -= 1
                        current.append(contentsOf: [characters[index], characters[index + 1]])
                        index += 2
                    } else {
                        current.append(characters[index])
                        index += 1
                    }
                } while depth > 0 && index < characters.count
                continue
            case "'", "\"":
                current.append(c)
                index += 1
                while index < characters.count {
                    current.append(characters[index])
                    if characters[index] == c {
                        if index + 1 < characters.count, characters[index + 1] == c {  // doubled quote
                            current.append(characters[index + 1])
                            index += 2
                            continue
                        }
                        index += 1
                        break
                    }
                    index += 1
                }
                continue
            case "$":
                // A dollar quote: $$ or $tag$ where tag is an identifier.
                var end = index + 1
                while end < characters.count, characters[end] == "_" || characters[end].properties.isAlphabetic
                    || (end > index + 1 && ("0"..."9").contains(characters[end]))
                {
                    end += 1
                }
                if end < characters.count, characters[end] == "$" {
                    let tag = Array(characters[index...end])
                    current.append(contentsOf: tag)
                    index = end + 1
                    while index < characters.count {
                        if characters[index] == "$", index + tag.count <= characters.count,
                            Array(characters[index..<(index + tag.count)]) == tag
                        {
                            current.append(contentsOf: tag)
                            index += tag.count
                            break
                        }
                        current.append(characters[index])
                        index += 1
                    }
                    continue
                }
                current.append(c)
                index += 1
                continue
            case ";":
                flush()
                index += 1
                continue
            default:
                current.append(c)
                index += 1
            }
        }
        flush()
        return statements
    }
}

extension String {
    /// The text without surrounding white space; empty when it holds only comments.
    var trimmingSpacesAndComments: String {
        var lines = split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while let first = lines.first, first.trimmingCharacters(in: .whitespaces).isEmpty || first.trimmingCharacters(in: .whitespaces).hasPrefix("--") {
            lines.removeFirst()
        }
        let text = lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        return text
    }
}
