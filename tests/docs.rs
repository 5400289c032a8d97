//! The documentation keeps its promises: the README stays a front door (at most 250 lines), every
//! relative link in `README.md` and `docs/*.md` leads to a file, and every command their shell
//! blocks run names a script under `scripts/`, an `onedrive-operator` subcommand (as the built
//! binary's `--help` lists them) or a cargo example, bench or test that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `docs/*.md`: each path relative to the repository, and its text.
fn documents() -> Vec<(PathBuf, String)> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("the docs/ directory")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| Path::new("docs").join(p.file_name().expect("a file name")))
        .collect();
    docs.sort();
    std::iter::once(PathBuf::from("README.md"))
        .chain(docs)
        .map(|path| {
            let text = std::fs::read_to_string(root().join(&path))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (path, text)
        })
        .collect()
}

/// A fenced code block: its language (the info string's first word, `""` when unlabeled) and its
/// lines with their 1-based numbers.
struct Block<'a> {
    lang: &'a str,
    lines: Vec<(usize, &'a str)>,
}

/// A Markdown document split into the lines outside fenced blocks and the blocks.
struct Parsed<'a> {
    prose: Vec<(usize, &'a str)>,
    blocks: Vec<Block<'a>>,
}

fn parse(text: &str) -> Parsed<'_> {
    let mut parsed = Parsed { prose: Vec::new(), blocks: Vec::new() };
    let mut open: Option<Block<'_>> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        let closes = open.is_some() && fence.is_some_and(|rest| rest.trim().is_empty());
        if closes {
            parsed.blocks.extend(open.take());
        } else if let Some(block) = open.as_mut() {
            block.lines.push((i + 1, line));
        } else if let Some(info) = fence {
            open = Some(Block { lang: info.split_whitespace().next().unwrap_or(""), lines: Vec::new() });
        } else {
            parsed.prose.push((i + 1, line));
        }
    }
    parsed.blocks.extend(open);
    parsed
}

/// The targets of the inline links `[text](target)` on a line, code spans left out.
fn link_targets(line: &str) -> Vec<String> {
    let mut prose = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        }
        prose.push(if in_code || c == '`' { ' ' } else { c });
    }
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = i;
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let inside = rest[..end].trim();
        let target = match inside.strip_prefix('<').and_then(|t| t.split_once('>')) {
            Some((bracketed, _)) => bracketed,
            None => inside.split_whitespace().next().unwrap_or(""),
        };
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

#[test]
fn the_readme_is_a_front_door_of_at_most_250_lines() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines, at most 250: move the detail to a page under docs/");
}

#[test]
fn every_relative_link_in_the_docs_leads_to_a_file() {
    let mut broken = Vec::new();
    for (path, text) in documents() {
        let dir = path.parent().unwrap_or(Path::new(""));
        for (number, line) in parse(&text).prose {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let file = target.split('#').next().unwrap_or("");
                if file.is_empty() {
                    continue;
                }
                let resolved = match file.strip_prefix('/') {
                    Some(from_root) => root().join(from_root),
                    None => root().join(dir).join(file),
                };
                if !resolved.exists() {
                    broken.push(format!(
                        "{}:{number}: the link ({target}) leads nowhere: {} does not exist",
                        path.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links in the documentation:\n{}", broken.join("\n"));
}

/// The subcommands of the built binary, read from the "Commands:" section of its `--help`.
fn subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onedrive-operator"))
        .arg("--help")
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run onedrive-operator --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "onedrive-operator --help failed:\n{help}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<String> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        names.contains("run") && names.contains("doctor"),
        "no subcommands found in the \"Commands:\" section of `onedrive-operator --help`:\n{help}"
    );
    names
}

/// Words that run the command after them.
const PREFIXES: [&str; 6] = ["sudo", "env", "exec", "time", "nohup", "command"];

/// A shell line without its comment (a `#` that starts a word, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The word that ends a here-document this line starts (`<<'EOF'`, `<<EOF`, `<<-EOF`).
fn heredoc_terminator(command: &str) -> Option<String> {
    let rest = command.split_once("<<")?.1.trim_start_matches('-').trim_start();
    let word: String = rest
        .chars()
        .filter(|c| *c != '\'' && *c != '"')
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// The values a flag is given, as `--flag value` or `--flag=value`.
fn flag_values<'w>(args: &[&'w str], flag: &str) -> Vec<&'w str> {
    let spaced = args.windows(2).filter(|pair| pair[0] == flag).map(|pair| pair[1]);
    let joined = args.iter().filter_map(|w| w.strip_prefix(flag)?.strip_prefix('='));
    spaced.chain(joined).collect()
}

/// What is wrong with `onedrive-operator ARGS` (`how` is what the line runs it as): a first word
/// that is not one of its subcommands. Global options and `--help`/`--version` are left alone.
fn check_subcommand(how: &str, args: &[&str], subcommands: &BTreeSet<String>) -> Option<String> {
    let mut rest = args;
    while let [flag, tail @ ..] = rest {
        if *flag == "--log-format" {
            rest = tail.get(1..).unwrap_or(&[]);
        } else if flag.starts_with("--log-format=") {
            rest = tail;
        } else {
            break;
        }
    }
    let name = rest.first().filter(|w| !w.starts_with('-'))?;
    if subcommands.contains(*name) {
        return None;
    }
    let known: Vec<&str> = subcommands.iter().map(String::as_str).collect();
    Some(format!(
        "runs `{how} {name}`, but onedrive-operator has no subcommand {name:?} (it has: {})",
        known.join(", ")
    ))
}

/// What is wrong with `cargo ARGS`: an example, bench or test target that does not exist, or, for
/// `cargo run -- SUBCOMMAND`, a subcommand the binary does not have.
fn check_cargo(args: &[&str], subcommands: &BTreeSet<String>) -> Vec<String> {
    let (own, program): (&[&str], &[&str]) = match args.iter().position(|w| *w == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    };
    let mut problems = Vec::new();
    for (flag, dir) in [("--example", "examples"), ("--bench", "benches"), ("--test", "tests")] {
        for name in flag_values(own, flag) {
            let target = root().join(dir);
            if !target.join(format!("{name}.rs")).is_file() && !target.join(name).join("main.rs").is_file() {
                problems.push(format!("names `{flag} {name}`, but there is no {dir}/{name}.rs"));
            }
        }
    }
    let runs_the_binary = own.first() == Some(&"run")
        && !own.iter().any(|w| w.starts_with("--example") || w.starts_with("--bin"));
    if runs_the_binary {
        problems.extend(check_subcommand("cargo run --", program, subcommands));
    }
    problems
}

/// What is wrong with one shell line (its comment removed): the scripts, `onedrive-operator`
/// subcommands and cargo targets it names that do not exist.
fn check_command(command: &str, subcommands: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, _) in command.match_indices("scripts/") {
        let head = &command[..at];
        let head = head.strip_suffix("./").unwrap_or(head);
        let starts_a_word =
            head.chars().next_back().is_none_or(|c| c.is_whitespace() || "(=\"'`{;|&".contains(c));
        if !starts_a_word {
            continue;
        }
        let name: String = command[at + "scripts/".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        let name = name.trim_end_matches('.');
        if !name.is_empty() && !root().join("scripts").join(name).is_file() {
            problems.push(format!("runs scripts/{name}, which is not a file under scripts/"));
        }
    }
    let mut separated = command.to_string();
    for separator in ["&&", "||", "$(", "|", ";", "&", "`", "(", ")", "{", "}"] {
        separated = separated.replace(separator, "\n");
    }
    for simple in separated.lines() {
        let words: Vec<&str> = simple
            .split_whitespace()
            .skip_while(|w| PREFIXES.contains(w) || (w.contains('=') && !w.starts_with('-')))
            .collect();
        let Some((program, args)) = words.split_first() else { continue };
        if *program == "onedrive-operator" || program.ends_with("/onedrive-operator") {
            problems.extend(check_subcommand(program, args, subcommands));
        } else if *program == "cargo" {
            problems.extend(check_cargo(args, subcommands));
        }
    }
    problems
}

#[test]
fn every_command_in_the_docs_names_a_script_subcommand_or_target_that_exists() {
    let subcommands = subcommands();
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for block in parse(&text).blocks {
            // A console block's commands are the lines after a `$ ` prompt; the rest is output.
            let prompted = match block.lang {
                "sh" | "bash" | "shell" => false,
                "console" => true,
                "" => block.lines.iter().any(|(_, l)| l.starts_with("$ ")),
                _ => continue,
            };
            let mut heredoc: Option<String> = None;
            for &(number, line) in &block.lines {
                match heredoc.as_deref().map(|end| line.trim() == end) {
                    Some(true) => {
                        heredoc = None;
                        continue;
                    }
                    Some(false) => continue,
                    None => {}
                }
                let command = match (prompted, line.strip_prefix("$ ")) {
                    (false, _) => line,
                    (true, Some(command)) => command,
                    (true, None) => continue,
                };
                let command = strip_comment(command);
                heredoc = heredoc_terminator(command);
                for problem in check_command(command, &subcommands) {
                    problems.push(format!("{}:{number}: {problem}\n    {}", path.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "commands in the documentation that name nothing real:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let subcommands: BTreeSet<String> = ["run", "doctor", "login"].iter().map(|s| s.to_string()).collect();
    let check = |line: &str| check_command(strip_comment(line), &subcommands);
    assert!(check("onedrive-operator doctor --tenant t.yaml   # onedrive-operator nonsense").is_empty());
    assert!(check("kubectl -n onedrive-operator create secret tls x").is_empty());
    assert!(check("export KUBECONFIG=$(scripts/dev-cluster up)").is_empty());
    assert!(check("cargo run -q -- run --help").is_empty());
    assert_eq!(check("onedrive-operator --log-format json dcotor").len(), 1);
    assert_eq!(check("RUST_LOG=debug ./target/debug/onedrive-operator sing-in").len(), 1);
    assert_eq!(check("bash scripts/no-such-script").len(), 1);
    assert_eq!(check("cargo run --example no-such-example").len(), 1);
    assert_eq!(check("cargo run -- crdd").len(), 1);
    assert_eq!(heredoc_terminator("kubectl apply -f - <<'EOF'").as_deref(), Some("EOF"));
    assert_eq!(
        link_targets("see [a](docs/a.md#x), `[b](nowhere.md)` and [c](<c d.md> \"t\")"),
        ["docs/a.md#x", "c d.md"]
    );
}
