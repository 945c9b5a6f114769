"""``prdit models``: the registry with parameter counts."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the model commands to the CLI."""

    @app.command("models")
    def list_models(
        pattern: str = typer.Argument("", help="Only names containing this text, e.g. 'B/12'."),
        params: bool = typer.Option(False, "--params", help="Also build each model and count its parameters."),
    ) -> None:
        """List the registered model names (PRDiT-{size}/{patch}/{depth})."""
        from prdit.models import count_parameters, create_model, model_names, model_spec

        for name in model_names():
            if pattern not in name:
                continue
            spec = model_spec(name)
            line = (f"{name:<18} width {spec['hidden_size']:>5}  heads {spec['num_heads']:>2}  "
                    f"patch {spec['patch_size']:>2}/stride {spec['stride']}  depth {spec['depth']:>2}")
            if params:
                model = create_model(name, input_size=spec["stride"] * 2)
                total = count_parameters(model)
                if model.stage == 2:
                    model.freeze_stage1()
                line += f"  params {total:>12,}  stage-2 trainable {count_parameters(model, True):>12,}"
            typer.echo(line)
