"""`dvc plots show` draws without internet: the page template of .dvc/config carries vega,
vega-lite and vega-embed inline (deploy/plots_template.py, run by setup.sh)."""
import shutil

from conftest import REPO, bin_path, browser_dom, dvc_project, needs_chromium, run, tiny_params

TEMPLATE = REPO / ".dvc" / "plots.html"


def _project(tmp_path):
    repo = dvc_project(tmp_path / "repo", tiny_params())
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy(TEMPLATE, repo / ".dvc" / "plots.html")
    plots = repo / "plots"
    plots.mkdir()
    (plots / "rounds.csv").write_text("round,isim,isim_crf,baseline,baseline_crf,precision,recall\n"
                                      "1,41.5,47.2,38.0,44.1,60.1,70.2\n2,48.3,55.9,38.0,44.1,62.0,75.3\n"
                                      "3,52.7,60.4,38.0,44.1,64.2,78.9\n")
    (plots / "thresholds.csv").write_text("threshold,baseline,isim\n0.2,35.0,45.0\n0.3,38.0,49.0\n")
    (plots / "train_isim.csv").write_text("epoch,loss,loss_cls,loss_seg\n1,1.2,0.7,0.5\n2,0.9,0.5,0.4\n")
    (plots / "train_baseline.csv").write_text("epoch,loss_cls\n1,0.8\n2,0.6\n")
    return repo


def test_the_template_is_vendored_and_named_by_the_dvc_config():
    assert TEMPLATE.is_file(), "run ./setup.sh: it writes .dvc/plots.html"
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and page.count("<script>") == 3
    assert "cdn.jsdelivr.net" not in page.split("<!-- DVC's CDN scripts, unused:")[0]
    assert "html_template = plots.html" in (REPO / ".dvc" / "config").read_text()


@needs_chromium
def test_dvc_plots_show_draws_the_rounds_curve_offline(tmp_path):
    repo = _project(tmp_path)
    run([bin_path("dvc"), "plots", "show", "-o", "shown"], repo)
    page = (repo / "shown" / "index.html").read_text()
    assert "https://cdn" not in page.replace("<!-- DVC's CDN scripts, unused:", "").split("-->", 2)[-1]
    dom = browser_dom((repo / "shown" / "index.html").as_uri(), tmp_path)
    # each plot's div holds what vega-embed drew: a canvas and its actions menu, no error text
    assert dom.count("<canvas") >= 4, dom[:2000]
    assert "pseudo-mask mIoU per round" in page and "Error" not in dom.split("<body")[-1][:20000]
