//! Fenced code blocks in Markdown.

/// A fenced code block: the line of its opening fence (1-based), its info
/// string (`rust,no_run`), and its body.
#[derive(Debug)]
pub struct Block {
    pub line: usize,
    pub info: String,
    pub body: String,
}

impl Block {
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.info
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
    }

    pub fn is_compile_fail(&self) -> bool {
        self.tags().any(|t| t == "compile_fail")
    }

    /// The error codes a `compile_fail` block names, such as `E0373`.
    pub fn error_codes(&self) -> Vec<&str> {
        self.tags()
            .filter(|t| {
                t.len() == 5 && t.starts_with('E') && t[1..].chars().all(|c| c.is_ascii_digit())
            })
            .collect()
    }
}

/// Every fenced block in `markdown` (``` or ~~~, possibly indented in a list).
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        let is_fence =
            fence.len() >= 3 && fence.chars().all(|c| c == fence.chars().next().unwrap());
        match open.take() {
            None if is_fence => {
                let info = trimmed[fence.len()..].trim().to_owned();
                open = Some((
                    fence,
                    Block {
                        line: i + 1,
                        info,
                        body: String::new(),
                    },
                ));
            }
            None => {}
            Some((opening, block))
                if is_fence
                    && fence.starts_with(&opening[..1])
                    && fence.len() >= opening.len()
                    && trimmed[fence.len()..].trim().is_empty() =>
            {
                blocks.push(block);
            }
            Some((opening, mut block)) => {
                block.body.push_str(line);
                block.body.push('\n');
                open = Some((opening, block));
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_with_their_info_and_body() {
        let md = "text\n```rust,no_run\nfn main() {}\n```\n\n  ````\n  inner ``` not a close\n  ````\n```rust,compile_fail,E0373\nbad\n```\n";
        let found = blocks(md);
        assert_eq!(found.len(), 3);
        assert_eq!((found[0].line, found[0].info.as_str()), (2, "rust,no_run"));
        assert_eq!(found[0].body, "fn main() {}\n");
        assert_eq!(found[1].info, "");
        assert!(found[2].is_compile_fail());
        assert_eq!(found[2].error_codes(), vec!["E0373"]);
        assert!(!found[0].is_compile_fail());
    }
}
