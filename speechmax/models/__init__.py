"""speechmax.models"""
