//! Replays the committed seeds (and any crash reproducers added to seeds/) through the targets on the
//! stable toolchain, so a regression on a past finding fails the ordinary test run.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
    eprintln!("{target}: replayed {n} inputs");
}

#[test]
fn image_parse_corpus() {
    replay("image_parse", otter_fuzz::image_parse);
}

#[test]
fn manifest_decode_corpus() {
    replay("manifest_decode", otter_fuzz::manifest_decode);
}
