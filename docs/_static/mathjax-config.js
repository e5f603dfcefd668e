// MathJax 3 (served from this site, see docs/conf.py). Sphinx marks math with \( \) and \[ \].
// The Jupyter widget manager (html-manager 1.x) calls the MathJax 2 API `MathJax.Hub.Queue` whenever
// `window.MathJax` exists: the `Hub` below keeps it from crashing, before and after MathJax has loaded.
(function () {
  function hub() {
    return {
      Queue: function () { if (window.MathJax && MathJax.typesetPromise) MathJax.typesetPromise(); },
      Config: function () {}
    };
  }
  window.MathJax = {
    tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true},
    options: {
      ignoreHtmlClass: "tex2jax_ignore|mathjax_ignore|document",
      processHtmlClass: "tex2jax_process|mathjax_process|math|output_area"
    },
    startup: {
      ready: function () {
        MathJax.startup.defaultReady();
        MathJax.Hub = hub();
      }
    },
    Hub: hub()
  };
})();
