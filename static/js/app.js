// Progressive enhancement only: every page works without this file.
(function () {
  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var root = document.documentElement;
      var dark = root.dataset.theme ? root.dataset.theme === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("obs-theme", root.dataset.theme);
    });
  }
  // Controls marked data-autosubmit submit their form when changed (an inline onchange
  // handler would be refused by the Content-Security-Policy).
  document.querySelectorAll("[data-autosubmit]").forEach(function (control) {
    control.addEventListener("change", function () { control.form.submit(); });
  });
  // Custom range inputs submit the filter form when both ends are set.
  document.querySelectorAll("form.filters input[type=datetime-local]").forEach(function (input) {
    input.addEventListener("change", function () {
      var form = input.form;
      if (form.start.value && form.end.value) { form.submit(); }
    });
  });
})();
