"""VAEs with a class variable beside z: the joint discrete-continuous VAE (``joint``) and the
semi-supervised VAE (``m2``, Kingma et al., 2014, "Semi-supervised learning with deep
generative models", NeurIPS).

    model:  y ~ Cat(1/K),  z ~ N(0, I),  x ~ p(x | decoder(y, z))          (in plate "data")
    guide:  y ~ q(y | x) = Cat(softmax(classifier(x))),  z ~ N(loc(x, y), diag scale(x, y)^2)

For an image without a label the bound is

    U(x) = sum_y q(y|x) [ E_q(z|x,y) log p(x|y,z) - beta_z KL(q(z|x,y) || p(z)) ]
           - beta_y KL(q(y|x) || p(y)),

and how the sum over y is estimated is the model's ``discrete`` option
(:mod:`pyro_vae.model.discrete_sites`: exact enumeration, score function, or relaxed).

``m2`` also takes images with their label: each data row is the pixels followed by K label
columns, one-hot for a labelled image and all zero otherwise (:mod:`pyro_vae.data.labels`).
A labelled row contributes the bound of log p(x, y),

    L(x, y) = E_q(z|x,y) log p(x|y,z) + log p(y) - beta_z KL(q(z|x,y) || p(z)),

and the classifier's own term alpha * log q(y | x) (the paper's J^alpha, eq. 9): without it
q(y|x) would learn only from the unlabelled rows. Both branches run on every row under a
mask (``poutine.mask``), so a batch's shapes never depend on how many of its rows carry
labels: the masked branch adds exactly zero (Pyro leaves the enumerated site's weights
unmasked, and every cost below it is masked).

The class enters the networks through a linear map added to the first layer (W_x x + W_y y),
which is the first layer of the concatenation [x, y] computed without copying x K times.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from .. import param_store
from .conditional import class_grid
from .discrete_sites import DiscreteSite
from .likelihoods import Likelihood
from .nets import GaussianHead, _mlp
from .priors import Prior
from .vae import VAE, kl_weight


class ClassJoined(nn.Module):
    """relu(W_a a + W_y y + b), then the rest of an MLP: the first layers of a network that
    reads [a, y] for a one-hot (or relaxed) class y, broadcasting over enumerated classes."""

    def __init__(self, a_dim: int, classes: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.a_in = nn.Linear(a_dim, hidden[0])
        self.y_in = nn.Linear(classes, hidden[0], bias=False)
        self.rest = nn.Sequential(
            nn.ReLU(), *_mlp(hidden), *([nn.ReLU()] if len(hidden) > 1 else [])
        )

    def forward(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.rest(self.a_in(a) + self.y_in(y))


class ClassEncoder(nn.Module):
    """(x, y) -> (loc, scale) of q(z | x, y)."""

    def __init__(self, data_dim: int, classes: int, z_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.body = ClassJoined(data_dim, classes, hidden)
        self.head = GaussianHead(hidden[-1], z_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x, y))


class ClassDecoder(nn.Module):
    """(y, z) -> the likelihood's parameters."""

    def __init__(
        self, z_dim: int, classes: int, data_dim: int, hidden: Sequence[int], out_per_pixel: int
    ) -> None:
        super().__init__()
        hidden = tuple(reversed(hidden))
        self.body = ClassJoined(z_dim, classes, hidden)
        self.out = nn.Linear(hidden[-1], out_per_pixel * data_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z, y))


def classifier_network(data_dim: int, classes: int, hidden: Sequence[int]) -> nn.Sequential:
    """x -> the K logits of q(y | x)."""
    return _mlp([data_dim, *hidden, classes])


class JointVAE(VAE):
    """A categorical c and a continuous z, unsupervised (see the module doc); ``discrete``
    says how the class site is estimated, ``beta_discrete`` weights its KL as ``beta`` weights
    z's. The class site is named by ``class_site`` ("c" here, "y" for M2)."""

    weights_latents = True  # its model and guide weight their own sites

    class_site = "c"

    def __init__(
        self,
        classifier: nn.Module,
        encoder: ClassEncoder,
        decoder: ClassDecoder,
        likelihood: Likelihood,
        prior: Prior,
        discrete: DiscreteSite,
        classes: int,
        beta: float = 1.0,
        beta_discrete: float = 1.0,
    ) -> None:
        super().__init__(encoder, decoder, likelihood, prior, beta=beta)
        self.classifier = classifier
        self.discrete = discrete
        self.classes = classes
        kl_weight(beta_discrete)  # validates
        self.beta_discrete = float(beta_discrete)

    @property
    def data_dim(self) -> int:
        return self.likelihood.data_dim

    def class_probs(self, like: torch.Tensor) -> torch.Tensor:
        """p(y): uniform over the classes."""
        return like.new_full((self.classes,), 1.0 / self.classes)

    def _class_weight(self) -> contextlib.AbstractContextManager:
        return kl_weight(self.beta_discrete)

    def _unlabelled_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """p(y) p(z) p(x | y, z), inside the data plate."""
        with self._class_weight():
            y = pyro.sample(self.class_site, self.discrete.prior(self.class_probs(pixels)))
        with self._kl_weight():
            z = pyro.sample("z", self.prior())
        pyro.sample("x", self.likelihood(self.decoder(z, y), pixels), obs=pixels)
        return z

    def _unlabelled_guide(
        self, pixels: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor | None = None
    ):
        """q(y | x) q(z | x, y), inside the data plate; ``rows``: the rows this branch is for
        (their draw of y is used; the score-function estimator drops the others' terms)."""
        q_y, infer = self.discrete.guide(logits, pixels)
        if rows is not None:
            infer = {**infer, "score_rows": rows}
        with self._class_weight():
            y = pyro.sample(self.class_site, q_y, infer=infer)
        loc, scale = self.encoder(pixels, y)
        with self._kl_weight():
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        return y, z

    def _register(self, *names: str) -> None:
        for name in names:
            param_store.register(name, getattr(self, name))

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, c, z) = p(c) p(z) p(x | c, z)."""
        self._register("decoder", "prior", "likelihood")
        with self.data_plate(x):
            return self._unlabelled_model(x)

    def guide(self, x: torch.Tensor):
        """q(c, z | x) = q(c | x) q(z | x, c); returns (c, z)."""
        self._register("classifier", "encoder", "discrete")
        logits = self.classifier(x)
        with self.data_plate(x):
            return self._unlabelled_guide(x, logits)

    def guide_parameters(self) -> list[nn.Parameter]:
        return [*self.classifier.parameters(), *self.encoder.parameters()]

    # --- reading a trained model -----------------------------------------------------------

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.data_dim]

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x): class probabilities, shape (N, K)."""
        self.check_rows(x)
        return torch.softmax(self.classifier(self._pixels(x)), -1)

    def _most_probable(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels, the one-hot most probable class under q(y|x))."""
        y = F.one_hot(self.classify(x).argmax(-1), self.classes).to(x.dtype)
        return self._pixels(x), y

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x, y) at the most probable class y under q(y | x)."""
        pixels, y = self._most_probable(x)
        loc, scale = self.encoder(pixels, y)
        return dist.Normal(loc, scale).to_event(1)

    def code_guide(self, x: torch.Tensor) -> torch.Tensor:
        """z ~ q(z | x, y) at the most probable class: the codes figures read."""
        q = self.posterior(x)
        with self.data_plate(x):
            return pyro.sample("z", q)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | y, z = loc(x, y)] at the most probable class."""
        pixels, y = self._most_probable(x)
        loc, _ = self.encoder(pixels, y)
        return self.likelihood.mean(self.decoder(loc, y), pixels)

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | y, z]: the classes in turn, n / K of each, the same codes z for every class
        (a row per class and a column per code: style fixed along a column)."""
        z, y = class_grid(self.prior(), n, self.classes)
        return self.likelihood.mean(self.decoder(z, y))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None, kind: str = "mean"):
        """p(x | y, z) for codes z and one-hot classes y (one per code, or one for all;
        None: the first class), as :meth:`VAE.decode`'s ``kind`` asks."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {tuple(z.shape)}")
        if y is None:
            y = F.one_hot(torch.zeros((), dtype=torch.long), self.classes).to(z)
        return self._decoded(self.decoder(z, y), kind)


class SemiSupervisedVAE(JointVAE):
    """M2: the class is the label, observed on the rows that carry one (see the module doc);
    ``alpha`` weights the classification term alpha * log q(y | x) of labelled rows."""

    weights_latents = True  # its model and guide weight their own sites

    class_site = "y"

    def __init__(self, *args, alpha: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    @property
    def row_width(self) -> int:
        return self.data_dim + self.classes

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixels, a one-hot label for every row, which rows are labelled). Unlabelled rows
        get class 0 as a placeholder that their masked branch never counts."""
        pixels, labels = x[..., : self.data_dim], x[..., self.data_dim :]
        labelled = labels.sum(-1) > 0
        placeholder = F.one_hot(torch.zeros((), dtype=torch.long), self.classes).to(labels)
        return pixels, torch.where(labelled.unsqueeze(-1), labels, placeholder), labelled

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, y, z) = p(y) p(z) p(x | y, z), y observed where the row has a label, plus
        alpha * log q(y | x) on those rows."""
        self._register("decoder", "prior", "likelihood", "classifier")
        pixels, y, labelled = self.split(x)
        with self.data_plate(x):
            with poutine.mask(mask=labelled):
                with self._kl_weight():
                    z = pyro.sample("z_labelled", self.prior())
                pyro.sample("y_labelled", dist.OneHotCategorical(self.class_probs(x)), obs=y)
                out = self.decoder(z, y)
                pyro.sample("x_labelled", self.likelihood(out, pixels), obs=pixels)
                with poutine.scale(scale=self.alpha) if self.alpha else poutine.mask(mask=False):
                    q_y = dist.OneHotCategorical(logits=self.classifier(pixels))
                    pyro.sample("y_classified", q_y, obs=y, infer={"objective_term": True})
            with poutine.mask(mask=~labelled):
                return self._unlabelled_model(pixels)

    def guide(self, x: torch.Tensor):
        """q(z | x, y) for labelled rows; q(y | x) q(z | x, y) for the others; returns
        (y, z, z_labelled): the unlabelled branch's draws, then the labelled branch's z."""
        self._register("classifier", "encoder", "discrete")
        pixels, y, labelled = self.split(x)
        logits = self.classifier(pixels)
        with self.data_plate(x):
            with poutine.mask(mask=labelled):
                loc, scale = self.encoder(pixels, y)
                with self._kl_weight():
                    z_labelled = pyro.sample("z_labelled", dist.Normal(loc, scale).to_event(1))
            with poutine.mask(mask=~labelled):
                y, z = self._unlabelled_guide(pixels, logits, rows=~labelled)
        return y, z, z_labelled


def _class_parts(
    data_shape: Sequence[int], classes: int, likelihood: str, prior: str, discrete: str,
    z_dim: int, hidden: Sequence[int], model: str, options: dict,
) -> dict:  # fmt: skip
    """The parts both class-latent models are made of, from registered names."""
    from .discrete_sites import DISCRETE_SITES
    from .likelihoods import LIKELIHOODS
    from .option_routing import route
    from .priors import PRIORS

    if classes < 2:
        raise ValueError(f"a class variable needs at least 2 classes, got {classes}")
    if not hidden:
        raise ValueError(f"{model} needs at least one hidden layer")
    data_dim = int(torch.Size(data_shape).numel())
    parts = route(model, options, likelihood=likelihood, prior=prior, discrete=discrete)
    lik = LIKELIHOODS.create(likelihood, data_dim, **parts["likelihood"])
    return {
        "classifier": classifier_network(data_dim, classes, hidden),
        "encoder": ClassEncoder(data_dim, classes, z_dim, hidden),
        "decoder": ClassDecoder(z_dim, classes, data_dim, hidden, lik.params_per_pixel),
        "likelihood": lik,
        "prior": PRIORS.create(prior, z_dim, **parts["prior"]),
        "discrete": DISCRETE_SITES.create(
            discrete, offer={"data_dim": data_dim}, **parts["discrete"]
        ),
        "classes": classes,
    }


def build_joint_vae(
    data_shape: Sequence[int],
    *,
    classes: int = 10,
    discrete: str = "enumerate",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 16,
    hidden: Sequence[int] = (400,),
    beta: float = 1.0,
    beta_discrete: float = 1.0,
    **options: object,
) -> JointVAE:
    """The joint discrete-continuous VAE with ``classes`` categories; ``discrete`` is one of
    :data:`~pyro_vae.model.discrete_sites.DISCRETE_SITES` (its options, ``temperature`` or
    ``baseline_hidden``, pass through); other ``options`` go to the likelihood and prior."""
    parts = _class_parts(
        data_shape, classes, likelihood, prior, discrete, z_dim, hidden, "joint", dict(options)
    )
    return JointVAE(**parts, beta=beta, beta_discrete=beta_discrete)


def build_semi_supervised_vae(
    data_shape: Sequence[int],
    context_dim: int = 10,
    labelled_share: float = 1.0,
    *,
    discrete: str = "enumerate",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 16,
    hidden: Sequence[int] = (400,),
    classifier_weight: float = 10.0,
    beta: float = 1.0,
    beta_discrete: float = 1.0,
    **options: object,
) -> SemiSupervisedVAE:
    """M2 for data rows carrying ``context_dim`` label columns (the number of classes; see
    :mod:`pyro_vae.data.labels`). The classification term is Kingma et al.'s
    alpha E_labelled[log q(y|x)] with alpha = ``classifier_weight`` x N: per labelled row,
    ``classifier_weight * labelled_share`` with ``labelled_share`` = N / (labelled training
    images). The paper's 0.1 N suits its thousands of epochs; in 25 epochs on mnist-sample
    with 100 labels, 0.1 left q(y|x) at 53-65% test error, 1 drifted from 25% to 37%, 10
    held 24% (``docs/class_variable.md``). Options as for :func:`build_joint_vae`."""
    if classifier_weight < 0:
        raise ValueError(f"the classifier weight must be >= 0, got {classifier_weight}")
    parts = _class_parts(
        data_shape, context_dim, likelihood, prior, discrete, z_dim, hidden, "m2", dict(options)
    )
    alpha = classifier_weight * labelled_share
    return SemiSupervisedVAE(**parts, alpha=alpha, beta=beta, beta_discrete=beta_discrete)
