//! Every guest component the suite uses, built in one step before the tests run: `scripts/test`
//! runs this (ignored) test first, so no test's host shares the cores with a guest build (the
//! builders keep what did not change, so the suite's own calls find them done).

use refold_tests::{
    c_examples, examples, fixtures, js_examples, js_fixtures, python_examples, python_fixtures,
    upcasting, wasi_fixture,
};

#[test]
#[ignore = "run by scripts/test before the suite"]
fn build_every_component() {
    for built in [
        examples(),
        fixtures(),
        wasi_fixture(),
        c_examples(),
        js_examples(),
        js_fixtures(),
        python_examples(),
        python_fixtures(),
        upcasting(),
    ] {
        let components = std::fs::read_dir(built)
            .expect("read a component folder")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            .count();
        assert!(components > 0, "no component in {}", built.display());
    }
}
